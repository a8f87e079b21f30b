//! `struct nbdkit_plugin` as Debian's nbdkit-plugin-dev 1.32 lays it out
//! (`nbdkit-plugin.h`), field for field. New fields only ever go at the
//! end, and `_struct_size` says how much of it a plugin filled in: a
//! shorter struct leaves the later fields NULL here, a longer one has
//! fields we do not know.

use std::ffi::{c_char, c_int, c_void};

type H = *mut c_void;

/// The plugin's registration struct. With API version 1 the `*_v1` slots
/// hold pread, pwrite, flush, trim and zero, and the version 2 slots are
/// unused; with version 2 it is the other way round.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct RawPlugin {
    pub struct_size: u64,
    pub api_version: c_int,
    pub thread_model_max: c_int,

    pub name: *const c_char,
    pub longname: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,

    pub load: Option<unsafe extern "C" fn()>,
    pub unload: Option<unsafe extern "C" fn()>,

    pub config: Option<unsafe extern "C" fn(*const c_char, *const c_char) -> c_int>,
    pub config_complete: Option<unsafe extern "C" fn() -> c_int>,
    pub config_help: *const c_char,

    pub open: Option<unsafe extern "C" fn(c_int) -> H>,
    pub close: Option<unsafe extern "C" fn(H)>,

    pub get_size: Option<unsafe extern "C" fn(H) -> i64>,

    pub can_write: Option<unsafe extern "C" fn(H) -> c_int>,
    pub can_flush: Option<unsafe extern "C" fn(H) -> c_int>,
    pub is_rotational: Option<unsafe extern "C" fn(H) -> c_int>,
    pub can_trim: Option<unsafe extern "C" fn(H) -> c_int>,

    pub pread_v1: Option<unsafe extern "C" fn(H, *mut c_void, u32, u64) -> c_int>,
    pub pwrite_v1: Option<unsafe extern "C" fn(H, *const c_void, u32, u64) -> c_int>,
    pub flush_v1: Option<unsafe extern "C" fn(H) -> c_int>,
    pub trim_v1: Option<unsafe extern "C" fn(H, u32, u64) -> c_int>,
    pub zero_v1: Option<unsafe extern "C" fn(H, u32, u64, c_int) -> c_int>,

    pub errno_is_preserved: c_int,

    pub dump_plugin: Option<unsafe extern "C" fn()>,

    pub can_zero: Option<unsafe extern "C" fn(H) -> c_int>,
    pub can_fua: Option<unsafe extern "C" fn(H) -> c_int>,

    pub pread: Option<unsafe extern "C" fn(H, *mut c_void, u32, u64, u32) -> c_int>,
    pub pwrite: Option<unsafe extern "C" fn(H, *const c_void, u32, u64, u32) -> c_int>,
    pub flush: Option<unsafe extern "C" fn(H, u32) -> c_int>,
    pub trim: Option<unsafe extern "C" fn(H, u32, u64, u32) -> c_int>,
    pub zero: Option<unsafe extern "C" fn(H, u32, u64, u32) -> c_int>,

    pub magic_config_key: *const c_char,

    pub can_multi_conn: Option<unsafe extern "C" fn(H) -> c_int>,

    pub can_extents: Option<unsafe extern "C" fn(H) -> c_int>,
    pub extents: Option<unsafe extern "C" fn(H, u32, u64, u32, *mut c_void) -> c_int>,
    pub can_cache: Option<unsafe extern "C" fn(H) -> c_int>,
    pub cache: Option<unsafe extern "C" fn(H, u32, u64, u32) -> c_int>,

    pub thread_model: Option<unsafe extern "C" fn() -> c_int>,

    pub can_fast_zero: Option<unsafe extern "C" fn(H) -> c_int>,

    pub preconnect: Option<unsafe extern "C" fn(c_int) -> c_int>,

    pub get_ready: Option<unsafe extern "C" fn() -> c_int>,
    pub after_fork: Option<unsafe extern "C" fn() -> c_int>,

    pub list_exports: Option<unsafe extern "C" fn(c_int, c_int, *mut c_void) -> c_int>,
    pub default_export: Option<unsafe extern "C" fn(c_int, c_int) -> *const c_char>,
    pub export_description: Option<unsafe extern "C" fn(H) -> *const c_char>,

    pub cleanup: Option<unsafe extern "C" fn()>,

    pub block_size: Option<unsafe extern "C" fn(H, *mut u32, *mut u32, *mut u32) -> c_int>,
}

/// `NBDKIT_FLAG_*`, the flags passed to version 2 callbacks.
pub(super) const FLAG_MAY_TRIM: u32 = 1 << 0;
pub(super) const FLAG_FUA: u32 = 1 << 1;
pub(super) const FLAG_REQ_ONE: u32 = 1 << 2;
pub(super) const FLAG_FAST_ZERO: u32 = 1 << 3;

/// `NBDKIT_FUA_*` and `NBDKIT_CACHE_*`: none, emulate, native.
pub(super) const NONE: c_int = 0;
pub(super) const NATIVE: c_int = 2;

/// The struct's size in this layout (1.32's: 384 bytes on 64-bit).
pub(super) const SIZE: usize = std::mem::size_of::<RawPlugin>();

/// The bytes of the struct up to and including `name`: less than this
/// is no plugin at all.
pub(super) const MIN_SIZE: usize = std::mem::offset_of!(RawPlugin, name) + 8;

const _: () = assert!(SIZE == 384, "struct nbdkit_plugin is 384 bytes in 1.32");
