//! `exportname`: change which export names are listed, defaulted and
//! allowed, and their descriptions.
//!
//! - `default-export=NAME`: what a client asking for `""` gets (`""` too:
//!   then the layer below still opens its own default export, but the
//!   client is told the name is `""`).
//! - `exportname-list=keep|error|empty|defaultonly|explicit` (default
//!   keep): what `NBD_OPT_LIST` shows: the plugin's list, an error,
//!   nothing, only the default export, or only the `exportname=` names.
//! - `exportname=NAME` (repeatable): names for `explicit` and `strict`.
//! - `exportname-strict=true`: refuse any export not named by
//!   `exportname=`; the name the client sent is checked too, before
//!   `default-export` replaces an empty one, so `""` is refused unless
//!   `exportname=` (empty) is given.
//! - `exportdesc=keep|none|fixed:STRING|script:SCRIPT`: descriptions from
//!   the plugin, none, one fixed string, or a script's output (`$name` is
//!   the export).
//!
//! Example: `nbdkit --filter=exportname file dir=/srv exportname-list=explicit exportname=a exportname=b exportname-strict=true`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Errno, Error, ExportEntry, Filter, FilterHandle, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `exportname` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "exportname",
    description: "adjust export names, listing and descriptions",
    config_help: "default-export=<NAME>        Canonical name for the \"\" default export.\n\
                  exportname-list=<MODE>       keep, error, empty, defaultonly or explicit.\n\
                  exportname-strict=<BOOL>     Limit clients to the exportname= names.\n\
                  exportname=<NAME>            Add an export name (repeatable).\n\
                  exportdesc=<MODE>            keep, none, fixed:STRING or script:SCRIPT.",
    build,
};

#[derive(Clone, Copy, PartialEq)]
enum ListMode {
    Keep,
    Error,
    Empty,
    DefaultOnly,
    Explicit,
}

#[derive(Clone)]
enum Desc {
    Keep,
    None,
    Fixed(String),
    Script(String),
}

struct ExportName {
    default: Option<String>,
    list: ListMode,
    names: Vec<String>,
    strict: bool,
    desc: Desc,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let fail = |m: String| StartError(format!("exportname: {m}"));
    let default = p.take("default-export");
    let list = match p.take("exportname-list").as_deref() {
        None | Some("keep") => ListMode::Keep,
        Some("error") => ListMode::Error,
        Some("empty") => ListMode::Empty,
        Some("defaultonly") => ListMode::DefaultOnly,
        Some("explicit") => ListMode::Explicit,
        Some(v) => return Err(fail(format!("exportname-list={v}: unknown mode"))),
    };
    let names = p.take_all("exportname");
    let strict = p.take_bool("exportname-strict")?.unwrap_or(false);
    let desc = match p.take("exportdesc") {
        None => Desc::Keep,
        Some(v) => match v.as_str() {
            "keep" => Desc::Keep,
            "none" => Desc::None,
            _ => match (v.strip_prefix("fixed:"), v.strip_prefix("script:")) {
                (Some(s), _) => Desc::Fixed(s.to_string()),
                (_, Some(s)) => Desc::Script(s.to_string()),
                _ => return Err(fail(format!("exportdesc={v}: unknown mode"))),
            },
        },
    };
    Ok(Arc::new(ExportName { default, list, names, strict, desc }))
}

impl ExportName {
    /// The description to give `name`, given the plugin's.
    fn describe(&self, name: &str, plugin: Option<String>) -> Option<String> {
        match &self.desc {
            Desc::Keep => plugin,
            Desc::None => None,
            Desc::Fixed(s) => Some(s.clone()),
            Desc::Script(script) => {
                let out = tokio::task::block_in_place(|| {
                    std::process::Command::new("/bin/sh")
                        .arg("-c")
                        .arg(script)
                        .env("name", name)
                        .output()
                })
                .ok()?;
                let text = String::from_utf8_lossy(&out.stdout);
                out.status.success().then(|| text.strip_suffix('\n').unwrap_or(&text).to_string())
            }
        }
    }
}

#[async_trait]
impl Filter for ExportName {
    async fn default_export(&self, next: &Next, readonly: bool, is_tls: bool) -> Result<String> {
        // Strict: a client may ask for "" only if "" is an allowed name.
        if self.strict {
            if !self.names.iter().any(String::is_empty) {
                return Err(Error::new(
                    Errno::Inval,
                    "exportname: the default export (\"\") is not allowed (exportname-strict)",
                ));
            }
            return Ok(self.default.clone().unwrap_or_default());
        }
        match &self.default {
            Some(d) => Ok(d.clone()),
            None => next.default_export(readonly, is_tls).await,
        }
    }

    async fn list_exports(
        &self, next: &Next, readonly: bool, is_tls: bool,
    ) -> Result<Vec<ExportEntry>> {
        let list = match self.list {
            ListMode::Keep => next.list_exports(readonly, is_tls).await?,
            ListMode::Error => {
                return Err(Error::new(Errno::Perm, "exportname: listing is disabled"))
            }
            ListMode::Empty => Vec::new(),
            ListMode::DefaultOnly => vec![ExportEntry {
                name: self.default_export(next, readonly, is_tls).await?,
                description: None,
            }],
            ListMode::Explicit => self
                .names
                .iter()
                .map(|n| ExportEntry { name: n.clone(), description: None })
                .collect(),
        };
        Ok(list
            .into_iter()
            .map(|e| ExportEntry {
                description: self.describe(&e.name, e.description),
                name: e.name,
            })
            .collect())
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { readonly, export, .. } = *args;
        if self.strict && !self.names.iter().any(|n| n == export) {
            return Err(Error::new(
                Errno::Inval,
                format!("exportname: export '{export}' not found (exportname-strict)"),
            ));
        }
        // `default-export=` (empty) leaves "" for the layer below to
        // resolve with its own default, as every layer does in C.
        let below = if export.is_empty() {
            next.default_export(readonly, args.client.tls).await?
        } else {
            export.to_string()
        };
        let next = next.open(&args.with_export(&below)).await?;
        if matches!(self.desc, Desc::Keep) {
            return Ok(next);
        }
        let description = self.describe(export, next.description());
        Ok(Arc::new(Described { next, description }))
    }
}

struct Described {
    next: Arc<Guard>,
    description: Option<String>,
}

impl FilterHandle for Described {
    fn next(&self) -> &Guard {
        &self.next
    }
    fn description(&self) -> Option<String> {
        self.description.clone()
    }
}
