//! The set-up messages and their binary encoding (docs/protocol/09-setup.md §9.3).
//!
//! Every message is `version u8 ‖ type u8 ‖ body`; integers are little-endian; a string is
//! `u16 length ‖ UTF-8`; a list is `u32 count ‖ items`, the count checked against the bytes
//! left before anything is allocated. Decoding is total: any bytes give a message or a
//! [`SetupError`], never a panic, and a message must use every byte (no trailing garbage).

use super::SetupError;
use crate::session::FileEntry;

/// The set-up protocol version this build speaks.
pub const SETUP_VERSION: u8 = 1;
/// Longest file name in a manifest, in bytes (Linux's PATH_MAX).
pub const MAX_NAME_LEN: usize = 4096;
/// Longest refusal reason, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// Message type bytes.
mod kind {
    pub const HELLO: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const ACCEPT: u8 = 3;
    pub const REFUSE: u8 = 4;
    pub const SUMMARY: u8 = 5;
    pub const BYE: u8 = 6;
}

/// Plaintext greeting, one each way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub random: [u8; 32],
}

/// The receiver's overwrite policy as the client asks for it (§9.3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum OverwritePref {
    #[default]
    Never = 0,
    Always = 1,
    IfDifferent = 2,
    IfOlder = 3,
}

/// How much of an interrupted transfer the client wants kept (§9.3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum ResumePref {
    None = 0,
    #[default]
    Attributes = 1,
    SparseChecksum = 2,
    FullChecksum = 3,
}

/// Most extended attributes one file carries in an Offer.
pub const MAX_FILE_XATTRS: usize = 256;
/// Longest extended attribute name, in bytes (Linux XATTR_NAME_MAX).
pub const MAX_XATTR_NAME_LEN: usize = 255;
/// Largest extended attribute value, in bytes (Linux XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE_LEN: usize = 65_536;

/// Owner and extended attributes (ACLs among them) of one file: sent only when the sender
/// was asked to preserve them; the receiver applies them only if it also allows it and is
/// permitted (docs/FILES.md, "Owner, extended attributes and ACLs").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileAttrs {
    /// (uid, gid), when the owner is to be preserved.
    pub owner: Option<(u32, u32)>,
    /// (name, value) pairs, at most [`MAX_FILE_XATTRS`].
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The client's proposal: session parameters and the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// SHA-256 of the two Hello messages, client's first.
    pub transcript: [u8; 32],
    pub suite: u8,
    pub shards: u8,
    pub datagram_size: u16,
    pub ip_overhead: u16,
    pub window_bytes: u64,
    pub min_rate_bps: u64,
    pub target_rate_bps: u64,
    pub policy: u8,
    pub block_size_log2: u8,
    pub overwrite: OverwritePref,
    pub resume: ResumePref,
    pub files: Vec<FileEntry>,
    /// Empty, or one entry per file in `files` order (owner and xattrs to preserve).
    pub attrs: Vec<FileAttrs>,
}

/// The server's yes: the session id, the target rate it agrees to (at most the offered one:
/// a receiver may cap it), one UDP port per shard, and per file the prefix it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    pub session_id: u64,
    pub target_rate_bps: u64,
    pub ports: Vec<u16>,
    pub resume: Vec<u64>,
}

/// Why the server said no (wire code u16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RefuseCode {
    /// The transcript hash does not match the hellos.
    Transcript = 1,
    /// A session parameter is out of bounds.
    BadParams = 2,
    /// A file name is not a safe relative name.
    BadName = 3,
    /// The destination cannot take the files (exists under overwrite=never, missing, read-only).
    Destination = 4,
    /// The server is busy with another transfer.
    Busy = 5,
    /// A code this build does not know.
    Other = 0xffff,
}

impl RefuseCode {
    pub fn from_u16(v: u16) -> RefuseCode {
        use RefuseCode::*;
        [Transcript, BadParams, BadName, Destination, Busy]
            .into_iter()
            .find(|c| *c as u16 == v)
            .unwrap_or(Other)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refuse {
    pub code: RefuseCode,
    pub reason: String,
}

/// The server's end-of-transfer report: 0 = complete, else an `AbortReason` code; one BLAKE3
/// per file, as verified on the receiver (zeros for a file not verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub outcome: u16,
    pub checksums: Vec<[u8; 32]>,
}

/// Every set-up message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Offer(Offer),
    Accept(Accept),
    Refuse(Refuse),
    Summary(Summary),
    Bye,
}

impl Message {
    /// The message's name, for errors ("expected Accept, got Summary").
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Offer(_) => "Offer",
            Message::Accept(_) => "Accept",
            Message::Refuse(_) => "Refuse",
            Message::Summary(_) => "Summary",
            Message::Bye => "Bye",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        w.push(SETUP_VERSION);
        match self {
            Message::Hello(h) => {
                w.push(kind::HELLO);
                w.push(h.version);
                w.extend_from_slice(&h.random);
            }
            Message::Offer(o) => encode_offer(o, &mut w),
            Message::Accept(a) => {
                w.push(kind::ACCEPT);
                w.extend_from_slice(&a.session_id.to_le_bytes());
                w.extend_from_slice(&a.target_rate_bps.to_le_bytes());
                put_list(&mut w, &a.ports, |w, p| w.extend_from_slice(&p.to_le_bytes()));
                put_list(&mut w, &a.resume, |w, r| w.extend_from_slice(&r.to_le_bytes()));
            }
            Message::Refuse(r) => {
                w.push(kind::REFUSE);
                w.extend_from_slice(&(r.code as u16).to_le_bytes());
                put_str(&mut w, truncate_utf8(&r.reason, MAX_REASON_LEN));
            }
            Message::Summary(s) => {
                w.push(kind::SUMMARY);
                w.extend_from_slice(&s.outcome.to_le_bytes());
                put_list(&mut w, &s.checksums, |w, c| w.extend_from_slice(c));
            }
            Message::Bye => w.push(kind::BYE),
        }
        w
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, SetupError> {
        let mut r = Reader { rest: bytes };
        let version = r.u8()?;
        if version != SETUP_VERSION {
            return Err(SetupError::Version(version));
        }
        let msg = match r.u8()? {
            kind::HELLO => Message::Hello(Hello { version: r.u8()?, random: r.array()? }),
            kind::OFFER => Message::Offer(decode_offer(&mut r)?),
            kind::ACCEPT => Message::Accept(Accept {
                session_id: r.u64()?,
                target_rate_bps: r.u64()?,
                ports: r.list(2, Reader::u16)?,
                resume: r.list(8, Reader::u64)?,
            }),
            kind::REFUSE => Message::Refuse(Refuse {
                code: RefuseCode::from_u16(r.u16()?),
                reason: r.string(MAX_REASON_LEN)?,
            }),
            kind::SUMMARY => Message::Summary(Summary {
                outcome: r.u16()?,
                checksums: r.list(32, Reader::array)?,
            }),
            kind::BYE => Message::Bye,
            other => return Err(SetupError::Malformed("unknown message type", other.into())),
        };
        if !r.rest.is_empty() {
            return Err(SetupError::Malformed("trailing bytes", r.rest.len() as u64));
        }
        Ok(msg)
    }
}

fn encode_offer(o: &Offer, w: &mut Vec<u8>) {
    w.push(kind::OFFER);
    w.extend_from_slice(&o.transcript);
    w.extend_from_slice(&[o.suite, o.shards]);
    w.extend_from_slice(&o.datagram_size.to_le_bytes());
    w.extend_from_slice(&o.ip_overhead.to_le_bytes());
    for v in [o.window_bytes, o.min_rate_bps, o.target_rate_bps] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.extend_from_slice(&[o.policy, o.block_size_log2, o.overwrite as u8, o.resume as u8]);
    put_list(w, &o.files, |w, f| {
        put_str(w, &f.name);
        w.extend_from_slice(&f.size.to_le_bytes());
        w.extend_from_slice(&f.mode.to_le_bytes());
        w.extend_from_slice(&f.mtime_ns.to_le_bytes());
    });
    put_list(w, &o.attrs, |w, a| {
        let (uid, gid) = a.owner.unwrap_or((0, 0));
        w.push(u8::from(a.owner.is_some()));
        w.extend_from_slice(&uid.to_le_bytes());
        w.extend_from_slice(&gid.to_le_bytes());
        // Callers bound the list and its values (the sender reads them within the limits).
        put_list(w, &a.xattrs[..a.xattrs.len().min(MAX_FILE_XATTRS)], |w, (name, value)| {
            put_str(w, truncate_utf8(name, MAX_XATTR_NAME_LEN));
            let value = &value[..value.len().min(MAX_XATTR_VALUE_LEN)];
            w.extend_from_slice(&(value.len() as u32).to_le_bytes());
            w.extend_from_slice(value);
        });
    });
}

fn decode_attrs(r: &mut Reader<'_>) -> Result<FileAttrs, SetupError> {
    let has_owner = match r.u8()? {
        0 => false,
        1 => true,
        v => return Err(SetupError::Malformed("owner flag", v.into())),
    };
    let (uid, gid) = (r.u32()?, r.u32()?);
    // Smallest xattr: an empty name (2) + an empty value (4).
    let xattrs = r.list(6, |r| {
        let name = r.string(MAX_XATTR_NAME_LEN)?;
        let len = r.u32()? as usize;
        if len > MAX_XATTR_VALUE_LEN {
            return Err(SetupError::Malformed("xattr value too long", len as u64));
        }
        Ok((name, r.take(len)?.to_vec()))
    })?;
    if xattrs.len() > MAX_FILE_XATTRS {
        return Err(SetupError::Malformed("too many xattrs", xattrs.len() as u64));
    }
    Ok(FileAttrs { owner: has_owner.then_some((uid, gid)), xattrs })
}

fn decode_offer(r: &mut Reader<'_>) -> Result<Offer, SetupError> {
    let transcript = r.array()?;
    let (suite, shards) = (r.u8()?, r.u8()?);
    let (datagram_size, ip_overhead) = (r.u16()?, r.u16()?);
    let (window_bytes, min_rate_bps, target_rate_bps) = (r.u64()?, r.u64()?, r.u64()?);
    let (policy, block_size_log2) = (r.u8()?, r.u8()?);
    let overwrite = match r.u8()? {
        0 => OverwritePref::Never,
        1 => OverwritePref::Always,
        2 => OverwritePref::IfDifferent,
        3 => OverwritePref::IfOlder,
        v => return Err(SetupError::Malformed("overwrite policy", v.into())),
    };
    let resume = match r.u8()? {
        0 => ResumePref::None,
        1 => ResumePref::Attributes,
        2 => ResumePref::SparseChecksum,
        3 => ResumePref::FullChecksum,
        v => return Err(SetupError::Malformed("resume level", v.into())),
    };
    // Smallest entry: an empty name (2) + size (8) + mode (4) + mtime (8).
    let files = r.list(22, |r| {
        Ok(FileEntry {
            name: r.string(MAX_NAME_LEN)?,
            size: r.u64()?,
            mode: r.u32()?,
            mtime_ns: r.i64()?,
        })
    })?;
    // Smallest entry: flag (1) + uid (4) + gid (4) + an empty xattr list (4).
    let attrs = r.list(13, decode_attrs)?;
    Ok(Offer {
        transcript,
        suite,
        shards,
        datagram_size,
        ip_overhead,
        window_bytes,
        min_rate_bps,
        target_rate_bps,
        policy,
        block_size_log2,
        overwrite,
        resume,
        files,
        attrs,
    })
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    // Callers bound their strings (names are validated on the sender, reasons truncated).
    let s = truncate_utf8(s, usize::from(u16::MAX));
    w.extend_from_slice(&(s.len() as u16).to_le_bytes());
    w.extend_from_slice(s.as_bytes());
}

fn put_list<T>(w: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    w.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        put(w, item);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cursor over untrusted bytes; every read is checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SetupError> {
        if self.rest.len() < n {
            return Err(SetupError::Malformed("truncated", n as u64));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SetupError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SetupError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, SetupError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, SetupError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, SetupError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, SetupError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn string(&mut self, max: usize) -> Result<String, SetupError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(SetupError::Malformed("string too long", len as u64));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| SetupError::Malformed("not UTF-8", 0))
    }
    /// A counted list whose items take at least `min_item_len` bytes each: the count is checked
    /// against the bytes left, so a hostile count cannot make us reserve memory.
    fn list<T>(
        &mut self,
        min_item_len: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, SetupError>,
    ) -> Result<Vec<T>, SetupError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_item_len) > self.rest.len() {
            return Err(SetupError::Malformed("list count exceeds the message", count as u64));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = FileEntry> {
        ("[a-z/._é]{0,40}", any::<u64>(), any::<u32>(), any::<i64>())
            .prop_map(|(name, size, mode, mtime_ns)| FileEntry { name, size, mode, mtime_ns })
    }

    fn arb_attrs() -> impl Strategy<Value = FileAttrs> {
        let xattr = ("[a-z.]{0,20}", prop::collection::vec(any::<u8>(), 0..40));
        (any::<Option<(u32, u32)>>(), prop::collection::vec(xattr, 0..4))
            .prop_map(|(owner, xattrs)| FileAttrs { owner, xattrs })
    }

    fn arb_offer() -> impl Strategy<Value = Offer> {
        (
            any::<[u8; 32]>(),
            any::<(u8, u8, u16, u16)>(),
            any::<(u64, u64, u64)>(),
            any::<(u8, u8)>(),
            0u8..4,
            0u8..4,
            prop::collection::vec((arb_entry(), arb_attrs()), 0..6),
            any::<bool>(),
        )
            .prop_map(
                |(
                    transcript,
                    (suite, shards, ds, ipo),
                    (win, min, tgt),
                    (pol, bs),
                    ow,
                    rs,
                    entries,
                    with_attrs,
                )| {
                    let (files, attrs): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
                    let attrs = if with_attrs { attrs } else { Vec::new() };
                    Offer {
                        transcript,
                        suite,
                        shards,
                        datagram_size: ds,
                        ip_overhead: ipo,
                        window_bytes: win,
                        min_rate_bps: min,
                        target_rate_bps: tgt,
                        policy: pol,
                        block_size_log2: bs,
                        overwrite: [
                            OverwritePref::Never,
                            OverwritePref::Always,
                            OverwritePref::IfDifferent,
                            OverwritePref::IfOlder,
                        ][ow as usize],
                        resume: [
                            ResumePref::None,
                            ResumePref::Attributes,
                            ResumePref::SparseChecksum,
                            ResumePref::FullChecksum,
                        ][rs as usize],
                        files,
                        attrs,
                    }
                },
            )
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u8>(), any::<[u8; 32]>())
                .prop_map(|(version, random)| Message::Hello(Hello { version, random })),
            arb_offer().prop_map(Message::Offer),
            (
                any::<(u64, u64)>(),
                prop::collection::vec(any::<u16>(), 0..8),
                prop::collection::vec(any::<u64>(), 0..8)
            )
                .prop_map(|((session_id, target_rate_bps), ports, resume)| {
                    Message::Accept(Accept { session_id, target_rate_bps, ports, resume })
                }),
            (prop::sample::select(vec![1u16, 2, 3, 4, 5, 0xffff]), ".{0,50}").prop_map(
                |(c, reason)| { Message::Refuse(Refuse { code: RefuseCode::from_u16(c), reason }) }
            ),
            (any::<u16>(), prop::collection::vec(any::<[u8; 32]>(), 0..5))
                .prop_map(|(outcome, checksums)| Message::Summary(Summary { outcome, checksums })),
            Just(Message::Bye),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in arb_message()) {
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_messages(m in arb_message(), at in any::<usize>(), x in 1u8..) {
            let mut bytes = m.encode();
            let i = at % bytes.len();
            bytes[i] ^= x;
            let _ = Message::decode(&bytes);
            bytes.truncate(i);
            prop_assert!(Message::decode(&bytes).is_err());
        }
    }

    #[test]
    fn hostile_list_count_is_refused_without_allocation() {
        let mut bytes = Message::Summary(Summary { outcome: 0, checksums: vec![] }).encode();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Message::decode(&bytes), Err(SetupError::Malformed(..))));
    }

    #[test]
    fn trailing_bytes_and_wrong_version_are_refused() {
        let mut bytes = Message::Bye.encode();
        bytes.push(0);
        assert!(Message::decode(&bytes).is_err());
        assert_eq!(Message::decode(&[9, 6]), Err(SetupError::Version(9)));
    }
}
