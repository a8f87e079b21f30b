//! Throwaway X.509 credentials for a disk that requires TLS: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, and a client certificate,
//! laid out as nbdkit and libnbd look for them.

use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};

/// What a certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ca,
    Server,
    Client,
}

/// Write `ca-cert.pem`, `server-cert.pem`, `server-key.pem`,
/// `client-cert.pem` and `client-key.pem` into `dir`. Valid for 30 days
/// from an hour ago. RSA keys with key encipherment allowed, which qemu's
/// client insists on.
pub(crate) fn write(dir: &Path) -> std::io::Result<()> {
    let made = (|| -> Result<Vec<(&str, Vec<u8>)>, ErrorStack> {
        let ca_key = PKey::from_rsa(Rsa::generate(2048)?)?;
        // One key for both ends: these are test credentials, and each RSA
        // key takes a noticeable time to make.
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let ca = certificate(&ca_key, "nbdkit-test CA", Role::Ca, None)?;
        let server = certificate(&key, "localhost", Role::Server, Some((&ca, &ca_key)))?;
        let client = certificate(&key, "nbdkit-test client", Role::Client, Some((&ca, &ca_key)))?;
        let key_pem = key.private_key_to_pem_pkcs8()?;
        Ok(vec![
            ("ca-cert.pem", ca.to_pem()?),
            ("server-cert.pem", server.to_pem()?),
            ("server-key.pem", key_pem.clone()),
            ("client-cert.pem", client.to_pem()?),
            ("client-key.pem", key_pem),
        ])
    })()
    .map_err(std::io::Error::other)?;
    for (name, pem) in made {
        std::fs::write(dir.join(name), pem)?;
    }
    Ok(())
}

fn certificate(
    key: &PKey<Private>, cn: &str, role: Role, issuer: Option<(&X509, &PKey<Private>)>,
) -> Result<X509, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    match issuer {
        Some((ca, _)) => b.set_issuer_name(ca.subject_name())?,
        None => b.set_issuer_name(&name)?,
    }
    b.set_pubkey(key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (from, until) = (Asn1Time::from_unix(now - 3600)?, Asn1Time::days_from_now(30)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    match role {
        Role::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        }
        Role::Server | Role::Client => {
            b.append_extension(BasicConstraints::new().critical().build()?)?;
            b.append_extension(
                KeyUsage::new().critical().digital_signature().key_encipherment().build()?,
            )?;
            let mut eku = ExtendedKeyUsage::new();
            if role == Role::Server {
                eku.server_auth();
            } else {
                eku.client_auth();
            }
            b.append_extension(eku.build()?)?;
        }
    }
    if role == Role::Server {
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))?;
        b.append_extension(san)?;
    }
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())?;
    Ok(b.build())
}
