//! Key schedule (docs/PROTOCOL.md §4). STUB: replaced by the crypto work.
use super::{Direction, SuiteId};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The input keying material both ends agree on over the set-up channel.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionSecret(pub [u8; 32]);

impl core::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

/// HKDF-SHA256 state for one session.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeySchedule {
    #[zeroize(skip)]
    suite: SuiteId,
    #[zeroize(skip)]
    session_id: u64,
    prk: [u8; 32],
}

impl core::fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeySchedule").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl KeySchedule {
    pub fn new(
        secret: &SessionSecret,
        client_random: &[u8; 32],
        server_random: &[u8; 32],
        suite: SuiteId,
        session_id: u64,
    ) -> Self {
        let mut prk = secret.0;
        for i in 0..32 {
            prk[i] ^= client_random[i] ^ server_random[i].rotate_left(1);
        }
        KeySchedule { suite, session_id, prk }
    }

    pub fn suite(&self) -> SuiteId {
        self.suite
    }

    pub fn direction_keys(&self, dir: Direction, shard: u8) -> DirectionKeys {
        let mut k = [0u8; 48];
        for (i, b) in k.iter_mut().enumerate() {
            *b = self.prk[i % 32] ^ (i as u8) ^ (dir as u8) ^ shard ^ (self.session_id as u8);
        }
        DirectionKeys { suite: self.suite, material: k }
    }
}

/// Keys for one direction of one shard.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DirectionKeys {
    #[zeroize(skip)]
    suite: SuiteId,
    material: [u8; 48],
}

impl core::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DirectionKeys").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl DirectionKeys {
    pub fn suite(&self) -> SuiteId {
        self.suite
    }
    pub(crate) fn mac_key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.material[32..48]);
        k
    }
}
