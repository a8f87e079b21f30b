//! `tls-fallback`: serve plain (non-TLS) clients a small read-only disk
//! that tells them to use TLS, and TLS clients the real plugin.
//!
//! Meant for `--tls=on`: a plain client never reaches the plugin, not even
//! to list exports or open one (it sees the single export "").
//!
//! - `tlsreadme=MESSAGE`: what the plain disk holds (default: a sentence
//!   saying TLS is required). The disk is 512 bytes: the message,
//!   truncated to fit, then zeroes.
//!
//! It needs connections served in parallel (not `serialize_connections`):
//! a plain client must not wait behind a TLS one.
//!
//! Example: `nbdkit --tls=on --filter=tls-fallback file disk.img
//! tlsreadme='Connect with TLS'`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, ExportEntry, Filter, Flags, Handle, Next, OpenArgs, Result, ThreadModel,
};
use crate::error::StartError;
use crate::params::Params;

/// The `tls-fallback` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "tls-fallback",
    description: "TLS protocol fallback filter",
    config_help: "tlsreadme=<MESSAGE>  Alternative contents for the plaintext dummy export.",
    build,
};

/// The size of the plain clients' disk.
const README_SIZE: usize = 512;

struct TlsFallback {
    readme: Arc<[u8; README_SIZE]>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let text = p.take("tlsreadme").unwrap_or_else(|| {
        "This NBD server requires TLS authentication before it will serve useful data.\n".into()
    });
    let mut readme = [0u8; README_SIZE];
    let n = text.len().min(README_SIZE);
    readme[..n].copy_from_slice(&text.as_bytes()[..n]);
    Ok(Arc::new(TlsFallback { readme: Arc::new(readme) }))
}

#[async_trait]
impl Filter for TlsFallback {
    fn get_ready(&self, thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        if thread_model == ThreadModel::SerializeConnections {
            return Err(StartError(
                "the tls-fallback filter requires parallel connection support".into(),
            ));
        }
        Ok(())
    }

    async fn list_exports(
        &self, next: &Next, readonly: bool, is_tls: bool,
    ) -> Result<Vec<ExportEntry>> {
        if !is_tls {
            return Ok(vec![ExportEntry { name: String::new(), description: None }]);
        }
        next.list_exports(readonly, is_tls).await
    }

    async fn default_export(&self, next: &Next, readonly: bool, is_tls: bool) -> Result<String> {
        if !is_tls {
            return Ok(String::new());
        }
        next.default_export(readonly, is_tls).await
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        if !args.client.tls {
            // The plugin is not asked for anything on behalf of a client
            // that has not authenticated.
            return Ok(Arc::new(Readme(self.readme.clone())));
        }
        Ok(next.open(args).await?)
    }
}

/// The plain clients' disk.
struct Readme(Arc<[u8; README_SIZE]>);

#[async_trait]
impl Handle for Readme {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(README_SIZE as u64)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps::READ_ONLY)
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        // The server has checked the range against the size.
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
}
