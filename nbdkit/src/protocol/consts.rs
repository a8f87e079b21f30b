//! Every number on the NBD wire, with the names doc/proto.md gives them.
//! Nothing outside `protocol/` should need a literal from this file's domain.

/// "NBDMAGIC": first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle magic, and the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Oldstyle magic (after NBDMAGIC).
pub const OLD_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic of every option reply.
pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flag (server to client): fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server will omit the 124 zero bytes if the client agrees.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

/// Client flag (client to server): the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client agrees to omit the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.
/// `NBD_OPT_EXPORT_NAME`: choose an export and end the handshake (no error reply possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`: the client gives up on the handshake.
pub const OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`: list the exports.
pub const OPT_LIST: u32 = 3;
/// `NBD_OPT_STARTTLS`: upgrade the connection to TLS.
pub const OPT_STARTTLS: u32 = 5;
/// `NBD_OPT_INFO`: describe an export without choosing it.
pub const OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`: describe an export and choose it.
pub const OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`: ask for structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT`: list the metadata contexts matching queries.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT`: select metadata contexts for block status.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// `NBD_OPT_EXTENDED_HEADERS`: 32-byte request and reply headers, 64-bit
/// lengths (implies structured replies).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option replies.
/// `NBD_REP_ACK`: the option succeeded (and its list of replies is over).
pub const REP_ACK: u32 = 1;
/// `NBD_REP_SERVER`: one export in the answer to `NBD_OPT_LIST`.
pub const REP_SERVER: u32 = 2;
/// `NBD_REP_INFO`: one `NBD_INFO_*` item about an export.
pub const REP_INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`: one metadata context, with its id.
pub const REP_META_CONTEXT: u32 = 4;
/// Bit set in every error reply type.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// `NBD_REP_ERR_UNSUP`: the option is unknown or not supported.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// `NBD_REP_ERR_POLICY`: refused by the server's policy.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// `NBD_REP_ERR_INVALID`: the option's data is invalid.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// `NBD_REP_ERR_PLATFORM`: not supported on this platform.
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
/// `NBD_REP_ERR_TLS_REQD`: TLS must be negotiated first.
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
/// `NBD_REP_ERR_UNKNOWN`: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
/// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must accept block size constraints.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
/// `NBD_REP_ERR_TOO_BIG`: the option's data is too long.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;
/// `NBD_REP_ERR_EXT_HEADER_REQD`: extended headers must be negotiated first.
pub const REP_ERR_EXT_HEADER_REQD: u32 = REP_FLAG_ERROR | 10;

// NBD_INFO_* items inside NBD_REP_INFO.
/// `NBD_INFO_EXPORT`: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`: a human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
/// Transmission flag: the flags field is valid (always set).
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the FUA command flag is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: the export behaves like a rotating disk.
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: the DF (don't fragment) command flag is supported.
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: connections see each other's writes after a flush.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: `NBD_CMD_CACHE` is supported.
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
/// Transmission flag: the FAST_ZERO command flag is supported.
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;
/// Transmission flag: BLOCK_STATUS takes a payload naming the contexts
/// wanted (extended headers only; we do not offer it).
pub const FLAG_BLOCK_STATUS_PAYLOAD: u16 = 1 << 12;

// Requests and replies in transmission.
/// Magic of every request header.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Size of a request header on the wire.
pub const REQUEST_SIZE: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_SIZE: usize = 16;
/// Size of a structured reply chunk header.
pub const CHUNK_HEADER_SIZE: usize = 20;
/// Magic of an extended request header.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Magic of an extended reply chunk.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;
/// Size of an extended request header.
pub const EXTENDED_REQUEST_SIZE: usize = 32;
/// Size of an extended reply chunk header.
pub const EXTENDED_REPLY_SIZE: usize = 32;
/// The largest reply header of any kind.
pub const MAX_REPLY_HEADER_SIZE: usize = EXTENDED_REPLY_SIZE;

// Commands.
/// `NBD_CMD_READ`.
pub const CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`.
pub const CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`: the client is leaving.
pub const CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const CMD_TRIM: u16 = 4;
/// `NBD_CMD_CACHE`: prefetch.
pub const CMD_CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
/// Command flag: force unit access (durable before the reply).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: zeroes must be written, not punched as a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag: a read's reply must not be fragmented.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag: block status may stop after one extent.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag: fail a zero request that would not be fast.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
/// Command flag (extended headers only): the length field is the length of
/// a payload that follows the header.
pub const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

// Structured reply flags and chunk types.
/// Chunk flag: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk type: no payload (the reply is done).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a run of zeroes at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: extents of one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: extents of one metadata context, with 64-bit lengths
/// (extended headers only).
pub const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
/// Set in the type of every error chunk, known or not.
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
/// Chunk type: an error with a message.
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERROR_BIT | 1;
/// Chunk type: an error at an offset, with a message.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT | 2;

// Block status flags of base:allocation.
/// `base:allocation` flag: the extent is not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the extent reads as zeroes.
pub const STATE_ZERO: u32 = 1 << 1;

/// The one metadata context we serve.
pub const CONTEXT_BASE_ALLOCATION: &str = "base:allocation";

// Error values on the wire.
/// Wire error: operation not permitted.
pub const EPERM: u32 = 1;
/// Wire error: input/output error.
pub const EIO: u32 = 5;
/// Wire error: out of memory (also: request too large).
pub const ENOMEM: u32 = 12;
/// Wire error: invalid argument.
pub const EINVAL: u32 = 22;
/// Wire error: no space left.
pub const ENOSPC: u32 = 28;
/// Wire error: value too large (a DF read that cannot be one chunk).
pub const EOVERFLOW: u32 = 75;
/// Wire error: not supported (a FAST_ZERO that would be slow).
pub const ENOTSUP: u32 = 95;
/// Wire error: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// Largest READ or WRITE payload accepted (C nbdkit's limit). Larger requests
/// get ENOMEM.
pub const MAX_REQUEST_SIZE: u32 = 64 * 1024 * 1024;
/// Longest export name or description (the spec's limit on strings).
pub const MAX_STRING: usize = 4096;
/// Longest option payload we accept; longer ones are skipped and refused.
pub const MAX_OPTION_LENGTH: u32 = 64 * 1024;
/// Options one client may send before the server gives up on it.
pub const MAX_OPTIONS: usize = 1024;
