//! UDP sockets for the data plane, and the GSO/GRO message helpers both backends share.
//!
//! Role: open IPv4/IPv6 UDP sockets with large kernel buffers (SO_*BUFFORCE when permitted),
//! probe UDP GSO (`UDP_SEGMENT`), enable UDP GRO, and build/parse the `msghdr`s that carry them.
//! [`SendPlan`] turns a batch of datagram slices into a bounded set of GSO `sendmsg` calls in
//! preallocated storage; [`parse_gro_segment`] and [`parse_sockaddr`] read what the kernel
//! returns.
//!
//! Invariants:
//! - Parsing functions take plain byte slices and never panic on any input (a hostile peer
//!   controls the payload, the kernel controls the control data; neither may crash us).
//! - A [`SendPlan`] owns every buffer its `msghdr`s point to, except the datagram slices it
//!   was prepared from; it is boxed so those internal pointers stay valid when it moves, and
//!   the caller must keep the slices alive until the kernel has finished with the calls.
//! - Limits: at most [`MAX_BATCH_DATAGRAMS`] datagrams and [`MAX_GSO_CALLS`] calls per batch,
//!   at most [`MAX_GSO_SEGMENTS`] segments and [`MAX_GSO_BYTES`] bytes per GSO call.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{IoError, last_os_error, map_io};

/// Most datagrams accepted by one `send_batch`.
pub const MAX_BATCH_DATAGRAMS: usize = 1024;
/// Most `sendmsg` calls (GSO super-datagrams) built for one batch.
pub const MAX_GSO_CALLS: usize = 256;
/// Most segments in one GSO call (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO call (IP total length is 16 bits; leave room for headers).
pub const MAX_GSO_BYTES: usize = 65_000;
/// Largest UDP payload we ever send in one datagram (IPv6 jumbo-free maximum).
pub const MAX_DATAGRAM_BYTES: usize = 65_507;
/// Socket buffer size asked for by default (32 MiB: ~25 ms at 10 Gbit/s).
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 32 << 20;
/// Bytes of the name buffer (`sockaddr_storage`).
pub const NAME_BYTES: usize = 128;
/// Bytes of control buffer reserved per message (fits UDP_SEGMENT/UDP_GRO plus slack).
pub const CONTROL_BYTES: usize = 64;

const CMSG_HDR_BYTES: usize = std::mem::size_of::<libc::cmsghdr>();
// The byte-level cmsg code below assumes the 64-bit Linux layout (size_t length, two ints).
const _: () = assert!(CMSG_HDR_BYTES == 16 && std::mem::size_of::<usize>() == 8);

/// How to open a data-plane socket.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Wanted SO_RCVBUF in bytes.
    pub rcvbuf_bytes: usize,
    /// Wanted SO_SNDBUF in bytes.
    pub sndbuf_bytes: usize,
    /// Put the socket in O_NONBLOCK mode (the portable backend needs it; io_uring does not).
    pub is_nonblocking: bool,
    /// Ask the kernel to coalesce received datagrams (UDP_GRO).
    pub is_gro_wanted: bool,
    /// Set Don't Fragment and ignore the cached path MTU (IP_PMTUDISC_PROBE): a datagram too
    /// big for the path is lost rather than fragmented, which is what path-MTU probing needs;
    /// one too big for the local device still fails with EMSGSIZE ([`IoError::TooLarge`]).
    pub is_df: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            rcvbuf_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
            sndbuf_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
            is_nonblocking: true,
            is_gro_wanted: true,
            is_df: true,
        }
    }
}

/// An open, bound data-plane socket and what the kernel granted it.
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
    local: SocketAddr,
    is_gso: bool,
    is_gro: bool,
    rcvbuf_bytes: usize,
    sndbuf_bytes: usize,
}

impl UdpSocket {
    /// Opens and binds a UDP socket on `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr, opts: &UdpOptions) -> Result<UdpSocket, IoError> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| map_io("socket", &e))?;
        if addr.is_ipv6() {
            // Dual-stack is not wanted: a shard's socket serves exactly the family it names.
            socket.set_only_v6(true).map_err(|e| map_io("setsockopt(IPV6_V6ONLY)", &e))?;
        }
        socket.bind(&addr.into()).map_err(|e| map_io("bind", &e))?;
        socket.set_nonblocking(opts.is_nonblocking).map_err(|e| map_io("fcntl(O_NONBLOCK)", &e))?;
        let fd = socket.as_raw_fd();
        set_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, opts.rcvbuf_bytes)?;
        set_buffer(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, opts.sndbuf_bytes)?;
        let rcvbuf_bytes = socket.recv_buffer_size().map_err(|e| map_io("SO_RCVBUF", &e))?;
        let sndbuf_bytes = socket.send_buffer_size().map_err(|e| map_io("SO_SNDBUF", &e))?;
        let local = socket
            .local_addr()
            .map_err(|e| map_io("getsockname", &e))?
            .as_socket()
            .ok_or(IoError::Invalid("bound socket has a non-IP address"))?;
        if opts.is_df {
            let (level, name, value) = if addr.is_ipv6() {
                (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_PROBE)
            } else {
                (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE)
            };
            if !set_int_opt(fd, level, name, value) {
                return Err(last_os_error("setsockopt(MTU_DISCOVER)"));
            }
            // IPv6: never fragment locally either; a datagram over the MTU fails with
            // EMSGSIZE, which path-MTU probing takes as a ceiling (haul_proto::pmtu).
            if addr.is_ipv6() && !set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1) {
                return Err(last_os_error("setsockopt(IPV6_DONTFRAG)"));
            }
        }
        let is_gso = probe_gso(fd);
        let is_gro = opts.is_gro_wanted && set_int_opt(fd, libc::SOL_UDP, libc::UDP_GRO, 1);
        Ok(UdpSocket { socket, local, is_gso, is_gro, rcvbuf_bytes, sndbuf_bytes })
    }

    /// The bound address (with the port the kernel picked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether sends may carry UDP_SEGMENT (GSO).
    pub fn is_gso(&self) -> bool {
        self.is_gso
    }

    /// Stops using GSO on this socket (after the device refused a segmented send).
    pub fn disable_gso(&mut self) {
        self.is_gso = false;
    }

    /// Whether receives are coalesced (UDP_GRO enabled).
    pub fn is_gro(&self) -> bool {
        self.is_gro
    }

    /// Kernel-granted receive buffer (the kernel reports twice what was set).
    pub fn rcvbuf_bytes(&self) -> usize {
        self.rcvbuf_bytes
    }

    /// Kernel-granted send buffer (the kernel reports twice what was set).
    pub fn sndbuf_bytes(&self) -> usize {
        self.sndbuf_bytes
    }

    /// The raw descriptor, for submitting operations; it stays owned by this socket.
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Sets a socket buffer size with the FORCE option (root/CAP_NET_ADMIN) and falls back to the
/// plain option, which the kernel caps at net.core.{r,w}mem_max.
fn set_buffer(fd: RawFd, force_opt: i32, plain_opt: i32, bytes: usize) -> Result<(), IoError> {
    let value = bytes.min(i32::MAX as usize / 2) as i32;
    if set_int_opt(fd, libc::SOL_SOCKET, force_opt, value) {
        return Ok(());
    }
    if set_int_opt(fd, libc::SOL_SOCKET, plain_opt, value) {
        return Ok(());
    }
    Err(last_os_error("setsockopt(SO_*BUF)"))
}

/// `setsockopt(fd, level, name, &value)`; true on success.
pub(crate) fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> bool {
    // SAFETY: `value` is a live i32 on our stack and we pass its exact size; the kernel only
    // reads it during the call. A bad fd or option yields an error return, not UB.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// The MTU of the route to `peer` (the egress interface's, or a smaller one the kernel has
/// learnt for that path), from a throwaway socket connected to it: `IP_MTU` / `IPV6_MTU`
/// work only on a connected socket, and the shards' sockets are not connected. `None` if the
/// kernel cannot say (no route). Path-MTU probing never probes above it.
pub fn route_mtu(peer: SocketAddr) -> Option<u32> {
    let socket = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP)).ok()?;
    socket.connect(&peer.into()).ok()?;
    let (level, name) = if peer.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    let mut value = 0i32;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes the call expects; the kernel
    // writes at most `len` bytes into `value`. A bad option yields an error return.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), level, name, (&raw mut value).cast(), &raw mut len)
    };
    (rc == 0 && value > 0).then_some(value as u32)
}

/// UDP payload bytes that fit in one IP packet of `mtu` bytes to `peer` (IP + UDP headers:
/// 28 bytes on IPv4, 48 on IPv6).
pub fn udp_payload_for_mtu(peer: SocketAddr, mtu: u32) -> u32 {
    mtu.saturating_sub(if peer.is_ipv6() { 48 } else { 28 })
}

/// Whether the kernel accepts UDP_SEGMENT on this socket (then GSO sends work).
pub fn probe_gso(fd: RawFd) -> bool {
    // Setting a socket-wide segment size proves support; 0 turns the default off again, so
    // only sends that carry the cmsg are segmented.
    set_int_opt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 1200)
        && set_int_opt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

/// Whether a send that failed with `errno` means the device cannot segment (EIO on a GSO send:
/// e.g. no checksum offload on the egress device). The caller then disables GSO and retries;
/// quinn-udp does the same.
pub fn is_gso_failure(errno: Option<i32>, is_gso: bool) -> bool {
    is_gso && errno == Some(libc::EIO)
}

/// Turns a send error into a transient one when GSO was disabled because of it, so the caller
/// resends the batch (now unsegmented).
pub(crate) fn on_send_error(socket: &mut UdpSocket, err: IoError) -> IoError {
    if is_gso_failure(err.errno(), socket.is_gso()) {
        socket.disable_gso();
        return IoError::Transient {
            op: "GSO send refused by the device; GSO now off",
            errno: libc::EIO,
        };
    }
    err
}

/// A `sockaddr_storage`-sized, 8-aligned byte buffer for names the kernel reads or writes.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct NameBuf(pub [u8; NAME_BYTES]);

impl Default for NameBuf {
    fn default() -> Self {
        NameBuf([0; NAME_BYTES])
    }
}

/// Writes `addr` as a `sockaddr_in`/`sockaddr_in6` into `buf`; returns its length.
pub fn write_sockaddr(addr: SocketAddr, buf: &mut NameBuf) -> usize {
    let b = &mut buf.0;
    b.fill(0);
    match addr {
        SocketAddr::V4(a) => {
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    }
}

/// Reads a `sockaddr_in`/`sockaddr_in6` from raw bytes; `None` if too short or another family.
pub fn parse_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 as u16 {
        let flow = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope)))
    } else {
        None
    }
}

/// An 8-aligned control-message buffer.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct ControlBuf(pub [u8; CONTROL_BYTES]);

impl Default for ControlBuf {
    fn default() -> Self {
        ControlBuf([0; CONTROL_BYTES])
    }
}

/// Aligns a control-message length up to the platform's cmsg alignment (size_t); `None` on
/// overflow (a corrupt length).
fn cmsg_align(len: usize) -> Option<usize> {
    len.checked_next_multiple_of(std::mem::size_of::<usize>())
}

/// Writes one `SOL_UDP/UDP_SEGMENT` control message with `segment_bytes` into `buf`; returns
/// the control length to put in `msg_controllen`.
pub fn write_segment_cmsg(buf: &mut ControlBuf, segment_bytes: u16) -> usize {
    let data_len = std::mem::size_of::<u16>();
    let cmsg_len = CMSG_HDR_BYTES + data_len;
    let b = &mut buf.0;
    b.fill(0);
    b[0..8].copy_from_slice(&(cmsg_len as u64).to_ne_bytes()[..8]);
    b[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    b[12..16].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    b[16..18].copy_from_slice(&segment_bytes.to_ne_bytes());
    CMSG_HDR_BYTES + std::mem::size_of::<usize>()
}

/// Finds the UDP_GRO segment size in received control data. `None` means the buffer holds a
/// single datagram. Never panics, whatever the bytes.
pub fn parse_gro_segment(control: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    while let Some(hdr) = control.get(at..at.checked_add(CMSG_HDR_BYTES)?) {
        let len = u64::from_ne_bytes(hdr[0..8].try_into().ok()?) as usize;
        let level = i32::from_ne_bytes(hdr[8..12].try_into().ok()?);
        let kind = i32::from_ne_bytes(hdr[12..16].try_into().ok()?);
        if len < CMSG_HDR_BYTES {
            return None;
        }
        if level == libc::SOL_UDP && kind == libc::UDP_GRO {
            let data = control.get(at + CMSG_HDR_BYTES..at + CMSG_HDR_BYTES + 4)?;
            let seg = i32::from_ne_bytes(data.try_into().ok()?);
            return usize::try_from(seg).ok().filter(|s| *s > 0);
        }
        at = at.checked_add(cmsg_align(len)?)?;
    }
    None
}

/// The segment size of a receive buffer of `len` bytes: the GRO size when the kernel
/// coalesced it, otherwise the whole buffer is one datagram. Never 0.
pub fn segment_bytes_of(len: usize, gro_segment: Option<usize>) -> usize {
    gro_segment.unwrap_or(len).max(1)
}

/// Number of datagrams in a receive buffer of `len` bytes cut every `segment_bytes`.
pub fn datagram_count(len: usize, segment_bytes: usize) -> usize {
    len.div_ceil(segment_bytes.max(1))
}

/// How many datagrams from the front of `datagrams` go into the next GSO call: a run of
/// `segment_bytes`-long datagrams, closed early by a shorter one, capped by the limits.
pub fn next_gso_run(datagrams: &[&[u8]], segment_bytes: usize, is_gso: bool) -> usize {
    if !is_gso || segment_bytes == 0 {
        return datagrams.len().min(1);
    }
    let max_segs = (MAX_GSO_BYTES / segment_bytes).clamp(1, MAX_GSO_SEGMENTS);
    let mut n = 0;
    for d in datagrams.iter().take(max_segs) {
        n += 1;
        if d.len() != segment_bytes {
            break;
        }
    }
    n
}

/// Preallocated `msghdr`s, iovecs and control buffers for one send batch.
#[derive(Debug)]
pub struct SendPlan {
    pub(crate) msgs: Box<[libc::mmsghdr]>,
    iovecs: Box<[libc::iovec]>,
    controls: Box<[ControlBuf]>,
    dest: Box<NameBuf>,
    calls: usize,
}

// SAFETY: the raw pointers inside `msgs`/`iovecs` point into this plan's own boxed storage or
// into caller slices that are only used during one `send_batch` call on the owning thread;
// moving the plan to another thread moves that storage with it.
unsafe impl Send for SendPlan {}

impl Default for SendPlan {
    fn default() -> Self {
        SendPlan::new()
    }
}

impl SendPlan {
    /// Allocates the plan's fixed storage (start-up only).
    pub fn new() -> SendPlan {
        // SAFETY: mmsghdr and iovec are plain C structs of integers and raw pointers; all-zero
        // (null pointers, zero lengths) is a valid value for each field.
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        SendPlan {
            msgs: vec![zero_msg; MAX_GSO_CALLS].into_boxed_slice(),
            iovecs: vec![zero_iov; MAX_BATCH_DATAGRAMS].into_boxed_slice(),
            controls: vec![ControlBuf::default(); MAX_GSO_CALLS].into_boxed_slice(),
            dest: Box::default(),
            calls: 0,
        }
    }

    /// Number of calls prepared by the last [`SendPlan::prepare`].
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Builds the calls for `datagrams` to `dest`; every datagram must be at most
    /// `segment_bytes` long. The slices must stay alive until the calls complete.
    pub fn prepare(
        &mut self,
        dest: SocketAddr,
        datagrams: &[&[u8]],
        segment_bytes: usize,
        is_gso: bool,
    ) -> Result<usize, IoError> {
        check_batch(datagrams, segment_bytes)?;
        let name_len = write_sockaddr(dest, &mut self.dest);
        let name_ptr: *mut NameBuf = &mut *self.dest;
        let (mut at, mut call) = (0usize, 0usize);
        while at < datagrams.len() {
            if call == MAX_GSO_CALLS {
                return Err(IoError::Invalid("batch needs more than MAX_GSO_CALLS calls"));
            }
            let run = next_gso_run(&datagrams[at..], segment_bytes, is_gso);
            for (k, d) in datagrams[at..at + run].iter().enumerate() {
                self.iovecs[at + k] =
                    libc::iovec { iov_base: d.as_ptr().cast_mut().cast(), iov_len: d.len() };
            }
            let hdr = &mut self.msgs[call].msg_hdr;
            hdr.msg_name = name_ptr.cast();
            hdr.msg_namelen = name_len as libc::socklen_t;
            hdr.msg_iov = &raw mut self.iovecs[at];
            hdr.msg_iovlen = run;
            hdr.msg_flags = 0;
            if run > 1 {
                let len = write_segment_cmsg(&mut self.controls[call], segment_bytes as u16);
                hdr.msg_control = (&raw mut self.controls[call]).cast();
                hdr.msg_controllen = len;
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            self.msgs[call].msg_len = 0;
            at += run;
            call += 1;
        }
        self.calls = call;
        Ok(call)
    }

    /// The prepared `msghdr` of call `i` (for io_uring SendMsg).
    pub(crate) fn msghdr_ptr(&self, i: usize) -> *const libc::msghdr {
        &raw const self.msgs[i].msg_hdr
    }

    /// Payload bytes of call `i`.
    pub(crate) fn call_bytes(&self, i: usize) -> usize {
        let hdr = &self.msgs[i].msg_hdr;
        let start = (hdr.msg_iov as usize - self.iovecs.as_ptr() as usize)
            / std::mem::size_of::<libc::iovec>();
        self.iovecs[start..start + hdr.msg_iovlen].iter().map(|v| v.iov_len).sum()
    }
}

/// Validates a send batch against the limits; oversized input is the caller's bug.
fn check_batch(datagrams: &[&[u8]], segment_bytes: usize) -> Result<(), IoError> {
    if datagrams.len() > MAX_BATCH_DATAGRAMS {
        return Err(IoError::Invalid("batch larger than MAX_BATCH_DATAGRAMS"));
    }
    if segment_bytes == 0 || segment_bytes > MAX_DATAGRAM_BYTES || segment_bytes > u16::MAX as usize
    {
        return Err(IoError::Invalid("segment size must be 1..=65507"));
    }
    if datagrams.iter().any(|d| d.is_empty() || d.len() > segment_bytes) {
        return Err(IoError::Invalid("every datagram must be 1..=segment_bytes long"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips() {
        for addr in ["127.0.0.1:9", "[::1]:65535", "[fe80::1%3]:443", "10.1.2.3:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut buf = NameBuf::default();
            let len = write_sockaddr(addr, &mut buf);
            assert_eq!(parse_sockaddr(&buf.0[..len]), Some(addr));
        }
        assert_eq!(parse_sockaddr(&[]), None);
        assert_eq!(parse_sockaddr(&[2, 0, 0]), None);
        assert_eq!(parse_sockaddr(&[0xff; 64]), None);
    }

    #[test]
    fn gro_cmsg_is_found_and_junk_never_panics() {
        let mut buf = ControlBuf::default();
        let len = write_segment_cmsg(&mut buf, 1472);
        // Our own UDP_SEGMENT cmsg is not a GRO cmsg.
        assert_eq!(parse_gro_segment(&buf.0[..len]), None);
        // Forge a UDP_GRO cmsg after it.
        let mut two = [0u8; 64];
        two[..len].copy_from_slice(&buf.0[..len]);
        two[len..len + 8].copy_from_slice(&(CMSG_HDR_BYTES as u64 + 4).to_ne_bytes());
        two[len + 8..len + 12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        two[len + 12..len + 16].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
        two[len + 16..len + 20].copy_from_slice(&1200i32.to_ne_bytes());
        assert_eq!(parse_gro_segment(&two), Some(1200));
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..2000 {
            let mut junk = [0u8; 48];
            for b in junk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let _ = parse_gro_segment(&junk[..n % 49]);
            let _ = parse_sockaddr(&junk[..n % 49]);
        }
        let huge_len = [0xffu8; 16];
        assert_eq!(parse_gro_segment(&huge_len), None);
    }

    #[test]
    fn gso_runs_respect_segment_size_and_limits() {
        let full = [0u8; 1200];
        let short = [0u8; 100];
        let batch: Vec<&[u8]> = vec![&full, &full, &short, &full];
        assert_eq!(next_gso_run(&batch, 1200, true), 3);
        assert_eq!(next_gso_run(&batch[3..], 1200, true), 1);
        assert_eq!(next_gso_run(&batch, 1200, false), 1);
        let many: Vec<&[u8]> = vec![&full; 200];
        assert_eq!(next_gso_run(&many, 1200, true), 54);
        let big = [0u8; 8000];
        let bigs: Vec<&[u8]> = vec![&big; 20];
        assert_eq!(next_gso_run(&bigs, 8000, true), 8);
    }

    #[test]
    fn plan_builds_calls_and_rejects_bad_batches() {
        let full = [1u8; 1472];
        let batch: Vec<&[u8]> = vec![&full; 100];
        let mut plan = SendPlan::new();
        let dest: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(plan.prepare(dest, &batch, 1472, true).unwrap(), 3);
        assert_eq!(plan.call_bytes(0), 44 * 1472);
        assert_eq!(plan.call_bytes(2), 12 * 1472);
        assert_eq!(plan.prepare(dest, &batch, 1472, false).unwrap(), 100);
        assert!(plan.prepare(dest, &batch, 1000, true).is_err());
        let empty: [u8; 0] = [];
        assert!(plan.prepare(dest, &[&empty], 1000, true).is_err());
    }

    #[test]
    fn eio_on_a_gso_send_turns_gso_off_and_asks_for_a_retry() {
        assert!(is_gso_failure(Some(libc::EIO), true));
        assert!(!is_gso_failure(Some(libc::EIO), false));
        assert!(!is_gso_failure(Some(libc::EMSGSIZE), true));
        let mut sock =
            UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpOptions::default()).unwrap();
        if !sock.is_gso() {
            return;
        }
        let err = on_send_error(&mut sock, IoError::Other { op: "sendmmsg", errno: libc::EIO });
        assert!(err.is_transient());
        assert!(!sock.is_gso());
        let err = on_send_error(&mut sock, IoError::Other { op: "sendmmsg", errno: libc::EIO });
        assert!(!err.is_transient(), "without GSO an EIO is just an error");
    }

    #[test]
    fn route_mtu_of_loopback_is_the_lo_mtu() {
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mtu = route_mtu(v4).expect("loopback has a route");
        let lo = std::fs::read_to_string("/sys/class/net/lo/mtu").unwrap();
        // The route's MTU is capped at the largest IPv4 packet.
        assert_eq!(mtu, lo.trim().parse::<u32>().unwrap().min(65_535));
        assert_eq!(udp_payload_for_mtu(v4, 1500), 1472);
        assert_eq!(udp_payload_for_mtu("[::1]:9".parse().unwrap(), 1500), 1452);
    }

    #[test]
    fn binds_port_zero_v4() {
        let sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpOptions::default()).unwrap();
        assert_ne!(sock.local_addr().port(), 0);
        assert!(sock.rcvbuf_bytes() > 0 && sock.sndbuf_bytes() > 0);
        let mut value = 0i32;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live locals of the sizes the call expects.
        let rc = unsafe {
            libc::getsockopt(
                sock.raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        assert_eq!((rc, value), (0, libc::IP_PMTUDISC_PROBE), "DF must be set for probing");
    }
}
