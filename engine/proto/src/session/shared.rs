//! Machinery both shard kinds share. (Filled in with the shards.)

use crate::crypto::TAG_LEN;
use crate::wire::{DATA_PREFIX_LEN, HEADER_LEN};

/// Bytes of a data datagram that are not file payload.
pub(crate) const DATA_OVERHEAD: usize = HEADER_LEN + DATA_PREFIX_LEN + TAG_LEN;
