//! Typed `key=value` parameters for a plugin (and later its filters).
//!
//! The command line gives an ordered list of pairs. A plugin takes the keys it
//! knows (`take_size("size")`, `take("file")`, ...) and then calls
//! [`Params::finish`], which rejects anything left over, naming it.

use std::sync::{Arc, Mutex};

use crate::error::StartError;
use crate::size::parse_size;

/// The parameters given to one plugin.
#[derive(Debug, Clone, Default)]
pub struct Params {
    owner: String,
    items: Vec<(String, String)>,
    stdio_safe: bool,
    debug: DebugFlags,
    shutdown: crate::backend::shutdown::ShutdownRequest,
    log: crate::log::Log,
    thread_model: ThreadModelChoice,
}

/// A plugin's choice of thread model at start-up, narrower than the one its
/// [`PluginInfo`](crate::plugins::PluginInfo) states (what a script's
/// `thread_model` method answers). Clones share the choice.
#[derive(Debug, Clone, Default)]
pub struct ThreadModelChoice(Arc<Mutex<Option<crate::backend::ThreadModel>>>);

impl ThreadModelChoice {
    /// Allow no more concurrency than `model` (choices only ever narrow).
    pub fn narrow(&self, model: crate::backend::ThreadModel) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *c = Some(c.map_or(model, |m| m.min(model)));
    }

    /// The narrowest model chosen, if any.
    pub fn get(&self) -> Option<crate::backend::ThreadModel> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One `-D NAME.FLAG=N` from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugFlag {
    /// The plugin or filter it is for.
    pub name: String,
    /// The flag, as that plugin or filter names it.
    pub flag: String,
    /// Its value, N.
    pub value: i32,
}

impl DebugFlag {
    /// Parse `NAME.FLAG=N`: NAME and FLAG not empty, N an int in C's
    /// syntax (`0x10`, `010`, `-1`).
    pub fn parse(arg: &str) -> Result<DebugFlag, StartError> {
        let bad = || StartError("-D (Debug Flag) must have the format NAME.FLAG=N".into());
        let (lhs, n) = arg.split_once('=').ok_or_else(bad)?;
        let (name, flag) = lhs.split_once('.').ok_or_else(bad)?;
        if name.is_empty() || flag.is_empty() || n.is_empty() {
            return Err(bad());
        }
        let t = n.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
        let (neg, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let v = parse_uint("flag", body, 1 << 31).map_err(|_| bad())?;
        let v = if neg { -(v as i64) } else { v as i64 };
        let value = i32::try_from(v).map_err(|_| bad())?;
        Ok(DebugFlag { name: name.into(), flag: flag.into(), value })
    }
}

/// The `-D` flags, shared by the parameters of every layer. A plugin or
/// filter asks for the flags it knows at start-up; what nobody asked for is
/// reported by [`DebugFlags::warn_unused`].
#[derive(Debug, Clone, Default)]
pub struct DebugFlags(Arc<Mutex<Vec<(DebugFlag, bool)>>>);

impl DebugFlags {
    /// The flags given, none of them asked for yet.
    pub fn new(flags: &[DebugFlag]) -> DebugFlags {
        let list = flags.iter().map(|f| (f.clone(), false)).collect();
        DebugFlags(Arc::new(Mutex::new(list)))
    }

    /// The value of `-D NAME.FLAG=N` (the last one given), 0 if not given.
    pub fn get(&self, name: &str, flag: &str) -> i32 {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut value = 0;
        for (f, asked) in list.iter_mut() {
            if f.name == name && f.flag == flag {
                *asked = true;
                value = f.value;
            }
        }
        value
    }

    /// Offer each flag given for `name` to `set` (flag, value), as a C
    /// plugin's debug variables are set; those it takes count as asked
    /// for.
    pub fn apply(&self, name: &str, mut set: impl FnMut(&str, i32) -> bool) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (f, asked) in list.iter_mut() {
            if f.name == name && set(&f.flag, f.value) {
                *asked = true;
            }
        }
    }

    /// Warn (on stderr, as C nbdkit) about flags for a layer that does not
    /// have them, and flags for no layer that was loaded. `loaded` names
    /// the plugin and filters.
    pub fn warn_unused(&self, loaded: &[&str]) {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (f, _) in list.iter().filter(|(_, asked)| !asked) {
            if loaded.contains(&f.name.as_str()) {
                // C names the shared-library symbol it looked for.
                let symbol = format!("{}_debug_{}", f.name, f.flag).replace('.', "_");
                eprintln!(
                    "nbdkit: warning: -D {}.{}: {} does not contain a global variable called {symbol} (it has no such debug flag)",
                    f.name, f.flag, f.name
                );
            } else {
                eprintln!("nbdkit: warning: debug flag -D {}.{} was not used", f.name, f.flag);
            }
        }
    }
}

impl Params {
    /// Parameters for the plugin called `owner`.
    pub fn new(owner: &str, items: Vec<(String, String)>) -> Params {
        Params {
            owner: owner.to_string(),
            items,
            stdio_safe: true,
            debug: DebugFlags::default(),
            shutdown: Default::default(),
            log: Default::default(),
            thread_model: Default::default(),
        }
    }

    /// Where the plugin narrows its thread model at start-up; keep a clone
    /// when `self` is about to be consumed.
    pub fn thread_model_choice(&self) -> ThreadModelChoice {
        self.thread_model.clone()
    }

    /// Say whether a plugin may read stdin (a script from `-`, a
    /// password): not under `-s`, where stdin is the client.
    pub fn with_stdio_safe(mut self, safe: bool) -> Params {
        self.stdio_safe = safe;
        self
    }

    /// Whether a plugin may read stdin (C's `nbdkit_stdio_safe`).
    pub fn stdio_safe(&self) -> bool {
        self.stdio_safe
    }

    /// The same parameters, with the server's log.
    pub fn with_log(mut self, log: crate::log::Log) -> Params {
        self.log = log;
        self
    }

    /// The server's log, for a plugin or filter to keep and write to.
    pub fn log(&self) -> crate::log::Log {
        self.log.clone()
    }

    /// The same parameters, with the server's shutdown request.
    pub fn with_shutdown(mut self, shutdown: crate::backend::shutdown::ShutdownRequest) -> Params {
        self.shutdown = shutdown;
        self
    }

    /// How a plugin or filter asks the server to stop (C's
    /// `nbdkit_shutdown`): keep it, and call `request()` when the time
    /// comes.
    pub fn shutdown(&self) -> crate::backend::shutdown::ShutdownRequest {
        self.shutdown.clone()
    }

    /// The same parameters, with the `-D` flags of the command line.
    pub fn with_debug(mut self, debug: DebugFlags) -> Params {
        self.debug = debug;
        self
    }

    /// The `-D` flags of every layer.
    pub fn debug_flags(&self) -> DebugFlags {
        self.debug.clone()
    }

    /// `-D OWNER.FLAG=N` for the plugin these belong to: N, or 0.
    pub fn debug_flag(&self, flag: &str) -> i32 {
        self.debug.get(&self.owner, flag)
    }

    /// `-D NAME.FLAG=N` for a filter `NAME`: N, or 0.
    pub fn debug_flag_of(&self, name: &str, flag: &str) -> i32 {
        self.debug.get(name, flag)
    }

    /// The plugin these belong to (for messages).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Take every value of `key`, in command-line order.
    pub fn take_all(&mut self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.items.retain(|(k, v)| {
            if k == key {
                out.push(v.clone());
                false
            } else {
                true
            }
        });
        out
    }

    /// Take everything not taken yet (for plugins whose other parameters
    /// are free-form, like `data`'s `$VAR`s).
    pub fn take_rest(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.items)
    }

    /// Take `key`; if it was given more than once the last one wins, as in C
    /// nbdkit where each `config` call overwrites the previous one.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.take_all(key).pop()
    }

    /// Take `key` as a size (`1M`, `512`, `2s` ...).
    pub fn take_size(&mut self, key: &str) -> Result<Option<u64>, StartError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse_size(&v)
                .map(Some)
                .map_err(|e| StartError(format!("{}: {key}: {e}", self.owner))),
        }
    }

    /// Take a required size.
    pub fn require_size(&mut self, key: &str) -> Result<u64, StartError> {
        self.take_size(key)?.ok_or_else(|| {
            StartError(format!("{}: you must specify {key}=<SIZE> on the command line", self.owner))
        })
    }

    /// Take `key` as an unsigned number no greater than `max`, in C's
    /// syntax (see [`parse_uint`]).
    pub fn take_uint(&mut self, key: &str, max: u64) -> Result<Option<u64>, StartError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse_uint(key, &v, max)
                .map(Some)
                .map_err(|e| StartError(format!("{}: {e}", self.owner))),
        }
    }

    /// Take `key` as a boolean (`1/0`, `true/false`, `t/f`, `yes/no`,
    /// `y/n`, `on/off`, any case), as C's `nbdkit_parse_bool`.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, StartError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "t" | "yes" | "y" | "on" => Ok(Some(true)),
                "0" | "false" | "f" | "no" | "n" | "off" => Ok(Some(false)),
                _ => Err(StartError(format!(
                    "{}: {key}: could not decipher boolean ({v})",
                    self.owner
                ))),
            },
        }
    }

    /// Reject whatever was not taken.
    pub fn finish(self) -> Result<(), StartError> {
        match self.items.first() {
            None => Ok(()),
            Some((k, _)) => Err(StartError(format!(
                "{}: unknown parameter '{k}' (see '{} --help' for the parameters)",
                self.owner, self.owner
            ))),
        }
    }
}

/// Parse an unsigned number as C nbdkit's `nbdkit_parse_uint32_t` and
/// `nbdkit_parse_uint64_t` do: leading blanks and a `+` are allowed, `0x`
/// means hexadecimal and a leading `0` octal; a `-`, no digits, anything
/// after the digits, or a value over `max` is an error (named by `what`).
pub fn parse_uint(what: &str, s: &str, max: u64) -> Result<u64, String> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    if t.starts_with('-') {
        return Err(format!("{what}: negative numbers are not allowed"));
    }
    let body = t.strip_prefix('+').unwrap_or(t);
    let b = body.as_bytes();
    let (radix, start) = match b {
        [b'0', b'x' | b'X', d, ..] if d.is_ascii_hexdigit() => (16, 2),
        [b'0', ..] => (8, 0),
        _ => (10, 0),
    };
    let digits = b[start..].iter().take_while(|c| char::from(**c).is_digit(radix)).count();
    if digits == 0 {
        return Err(format!("{what}: empty string where we expected a number"));
    }
    let end = start + digits;
    let value =
        u64::from_str_radix(&body[start..end], radix).ok().filter(|v| *v <= max).ok_or_else(
            || format!("{what}: could not parse number: \"{t}\": Numerical result out of range"),
        )?;
    if end < body.len() {
        return Err(format!("{what}: could not parse number: \"{t}\": trailing garbage"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::{parse_uint, Params};

    #[test]
    fn booleans_as_c_parses_them() {
        for (v, want) in [
            ("1", true),
            ("TRUE", true),
            ("t", true),
            ("Yes", true),
            ("y", true),
            ("on", true),
            ("0", false),
            ("false", false),
            ("F", false),
            ("no", false),
            ("N", false),
            ("off", false),
        ] {
            let mut p = Params::new("x", vec![("k".into(), v.into())]);
            assert_eq!(p.take_bool("k").unwrap(), Some(want), "{v}");
        }
        let mut p = Params::new("x", vec![("k".into(), "maybe".into())]);
        assert_eq!(p.take_bool("k").unwrap_err().0, "x: k: could not decipher boolean (maybe)");
    }

    #[test]
    fn unsigned_numbers_as_c_parses_them() {
        let max = u32::MAX as u64;
        for (s, v) in [
            ("0", 0),
            ("42", 42),
            (" 5", 5),
            ("+7", 7),
            ("0x10", 16),
            ("0XfF", 255),
            ("010", 8),
            ("4294967295", max),
        ] {
            assert_eq!(parse_uint("n", s, max), Ok(v), "{s}");
        }
        for (s, e) in [
            ("", "n: empty string where we expected a number"),
            ("abc", "n: empty string where we expected a number"),
            ("-1", "n: negative numbers are not allowed"),
            (" -0", "n: negative numbers are not allowed"),
            ("12abc", "n: could not parse number: \"12abc\": trailing garbage"),
            ("0x", "n: could not parse number: \"0x\": trailing garbage"),
            ("08", "n: could not parse number: \"08\": trailing garbage"),
            (
                "4294967296",
                "n: could not parse number: \"4294967296\": Numerical result out of range",
            ),
        ] {
            assert_eq!(parse_uint("n", s, max), Err(e.to_string()), "{s}");
        }
        assert_eq!(parse_uint("n", "18446744073709551615", u64::MAX), Ok(u64::MAX));
        assert!(parse_uint("n", "18446744073709551616", u64::MAX)
            .unwrap_err()
            .ends_with("Numerical result out of range"));
    }
}
