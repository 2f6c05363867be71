//! AES-128-CFB + CMAC. STUB (serial).
use super::{DirectionKeys, Job, Suite, SuiteId, TAG_LEN};
use cmac::{Cmac, KeyInit, Mac};

pub(crate) struct CfbCmac {
    mac: Cmac<aes::Aes128>,
}

impl core::fmt::Debug for CfbCmac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CfbCmac(<redacted>)")
    }
}

impl CfbCmac {
    pub(crate) fn new(keys: &DirectionKeys) -> Self {
        let k = keys.mac_key();
        CfbCmac { mac: <Cmac<aes::Aes128> as KeyInit>::new(&k.into()) }
    }
    fn tag(&self, seq: u64, data: &[u8]) -> [u8; 16] {
        let mut m = self.mac.clone();
        m.update(&seq.to_le_bytes());
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

impl Suite for CfbCmac {
    fn id(&self) -> SuiteId {
        SuiteId::Aes128CfbCmac
    }
    fn seal_batch(&mut self, jobs: &mut [Job<'_>]) {
        for j in jobs {
            let n = j.buf.len() - TAG_LEN;
            let t = self.tag(j.seq, &j.buf[..n]);
            j.buf[n..].copy_from_slice(&t);
        }
    }
    fn open_batch(&mut self, jobs: &mut [Job<'_>]) {
        for j in jobs {
            j.ok = false;
            if j.buf.len() < j.header_len + TAG_LEN || j.header_len > j.buf.len() {
                continue;
            }
            let n = j.buf.len() - TAG_LEN;
            let t = self.tag(j.seq, &j.buf[..n]);
            j.ok = t == j.buf[n..];
        }
    }
}

#[cfg(any(test, feature = "reference"))]
pub(crate) mod reference {
    pub fn seal(_: &super::DirectionKeys, _: u64, _: usize, _: &mut [u8]) {}
    pub fn open(_: &super::DirectionKeys, _: u64, _: usize, _: &mut [u8]) -> bool {
        false
    }
}
