//! Portable backend: `sendmmsg` (+ GSO) and `recvmmsg` (+ GRO) on a nonblocking socket.
//!
//! Role: the data plane's network backend where io_uring is unavailable (disabled by sysctl,
//! forbidden by seccomp, an old kernel) or forced by `HAUL_IO_BACKEND=portable` / the builder.
//! It offers the same batch interface as the io_uring backend, one syscall per batch.
//!
//! Invariants:
//! - All message headers, names, control buffers and receive buffers are preallocated at
//!   construction; a batch allocates nothing.
//! - Receive buffers live in a [`BufPool`] (one slot per message, big enough for a full GRO
//!   coalesced buffer), lent once at start-up and held for the backend's lifetime.
//! - Waiting is bounded: a send waits at most [`SEND_WAIT_MS`] per `poll` and retries at most
//!   [`MAX_SEND_WAITS`] times; a receive waits at most the caller's timeout.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::IoStats;
use crate::buf::{Backing, BufPool, SlotId};
use crate::error::{IoError, last_os_error};
use crate::udp::{
    CONTROL_BYTES, ControlBuf, NAME_BYTES, NameBuf, SendPlan, UdpSocket, datagram_count,
    on_send_error, parse_gro_segment, parse_sockaddr, segment_bytes_of,
};

/// Messages per `recvmmsg` call.
pub const RECV_MSGS: usize = 32;
/// Bytes per receive buffer: the largest GRO-coalesced payload (64 KiB).
pub const RECV_BUFFER_BYTES: usize = 1 << 16;
/// Longest single wait for the socket to drain before a send is retried.
pub const SEND_WAIT_MS: i32 = 100;
/// Most waits in one `send_batch` before it gives up with a transient error.
pub const MAX_SEND_WAITS: usize = 100;

/// The portable sendmmsg/recvmmsg backend.
#[derive(Debug)]
pub struct PortableBackend {
    socket: UdpSocket,
    plan: SendPlan,
    rx: RecvMsgs,
    stats: IoStats,
    /// An eventfd whose readiness ends a wait early ([`PortableBackend::watch_waker`]).
    waker: Option<i32>,
}

/// Preallocated `recvmmsg` state.
#[derive(Debug)]
struct RecvMsgs {
    msgs: Box<[libc::mmsghdr]>,
    iovecs: Box<[libc::iovec]>,
    names: Box<[NameBuf]>,
    controls: Box<[ControlBuf]>,
    // Field order: the pool drops after the headers that point into it.
    pool: BufPool,
    slots: Box<[SlotId]>,
}

// SAFETY: the raw pointers in `rx` point into the backend's own boxed storage and pool mapping,
// which move with it; the backend is used by one thread at a time (`&mut self` methods).
unsafe impl Send for PortableBackend {}

impl PortableBackend {
    /// Ends every later wait of [`Self::recv_segments`] as soon as the eventfd `fd` (kept
    /// open by the caller for this backend's life) becomes readable; the wait reads it back
    /// to zero.
    pub fn watch_waker(&mut self, fd: i32) {
        self.waker = Some(fd);
    }

    /// Wraps a bound socket (which must be nonblocking) and preallocates the batch state.
    pub fn new(socket: UdpSocket) -> Result<PortableBackend, IoError> {
        let mut pool = BufPool::new(RECV_MSGS, RECV_BUFFER_BYTES)?;
        let mut slots = Vec::with_capacity(RECV_MSGS);
        let mut iovecs = Vec::with_capacity(RECV_MSGS);
        for _ in 0..RECV_MSGS {
            let id = pool.alloc().ok_or(IoError::Invalid("receive pool smaller than RECV_MSGS"))?;
            let base = pool.slot_addr(id.index).ok_or(IoError::Invalid("slot out of range"))?;
            slots.push(id);
            iovecs.push(libc::iovec { iov_base: base.cast(), iov_len: RECV_BUFFER_BYTES });
        }
        // SAFETY: mmsghdr is a C struct of integers and raw pointers; all-zero is valid.
        let zero: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let rx = RecvMsgs {
            msgs: vec![zero; RECV_MSGS].into_boxed_slice(),
            iovecs: iovecs.into_boxed_slice(),
            names: vec![NameBuf::default(); RECV_MSGS].into_boxed_slice(),
            controls: vec![ControlBuf::default(); RECV_MSGS].into_boxed_slice(),
            pool,
            slots: slots.into_boxed_slice(),
        };
        Ok(PortableBackend {
            socket,
            plan: SendPlan::new(),
            rx,
            stats: IoStats::default(),
            waker: None,
        })
    }

    /// The socket this backend drives.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Which memory backs the receive buffers.
    pub fn recv_pool_backing(&self) -> Backing {
        self.rx.pool.backing()
    }

    /// Counters since construction.
    pub fn stats(&self) -> IoStats {
        self.stats
    }

    /// Sends `datagrams` to `dest`, GSO-batched by `segment_bytes` when the socket supports it.
    /// Returns the number of datagrams handed to the kernel (all of them, or an error).
    pub fn send_batch(
        &mut self,
        dest: SocketAddr,
        datagrams: &[&[u8]],
        segment_bytes: usize,
    ) -> Result<usize, IoError> {
        let calls = self.plan.prepare(dest, datagrams, segment_bytes, self.socket.is_gso())?;
        let fd = self.socket.raw_fd();
        let (mut done, mut waits) = (0usize, 0usize);
        while done < calls {
            let rest = &mut self.plan.msgs[done..calls];
            self.stats.syscalls += 1;
            // SAFETY: `rest` is a live slice of prepared mmsghdrs whose pointers target the
            // plan's boxed storage and the caller's `datagrams`, all borrowed for this call.
            let rc = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if rc >= 0 {
                done += rc as usize;
                continue;
            }
            let err = last_os_error("sendmmsg");
            if err.errno() != Some(libc::EAGAIN) && err.errno() != Some(libc::EINTR) {
                return Err(on_send_error(&mut self.socket, err));
            }
            waits += 1;
            if waits > MAX_SEND_WAITS {
                return Err(IoError::Transient { op: "sendmmsg", errno: libc::EAGAIN });
            }
            self.stats.syscalls += 1;
            poll_fd(fd, libc::POLLOUT, SEND_WAIT_MS)?;
        }
        self.stats.datagrams_sent += datagrams.len() as u64;
        Ok(datagrams.len())
    }

    /// Receives what is queued, waiting up to `timeout` for the first datagram, and calls
    /// `on_buffer(from, payload, segment_bytes)` once per receive buffer: `payload` holds one
    /// or more datagrams of `segment_bytes` each (the last may be shorter), writable so the
    /// caller can verify and decrypt in place. Returns the number of datagrams.
    pub fn recv_segments<F>(
        &mut self,
        timeout: Duration,
        mut on_buffer: F,
    ) -> Result<usize, IoError>
    where
        F: FnMut(SocketAddr, &mut [u8], usize),
    {
        let fd = self.socket.raw_fd();
        let mut n = self.recvmmsg(fd)?;
        if n == 0 {
            let wait_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            if wait_ms == 0 {
                return Ok(0);
            }
            self.stats.syscalls += 1;
            if !poll_fd_or_wake(fd, self.waker, wait_ms)? {
                return Ok(0);
            }
            n = self.recvmmsg(fd)?;
        }
        let mut count = 0;
        for i in 0..n {
            let hdr = &self.rx.msgs[i].msg_hdr;
            let name_len = (hdr.msg_namelen as usize).min(NAME_BYTES);
            let control_len = hdr.msg_controllen.min(CONTROL_BYTES);
            let Some(from) = parse_sockaddr(&self.rx.names[i].0[..name_len]) else { continue };
            let gro = parse_gro_segment(&self.rx.controls[i].0[..control_len]);
            let len = (self.rx.msgs[i].msg_len as usize).min(RECV_BUFFER_BYTES);
            let Ok(buf) = self.rx.pool.slot_mut(self.rx.slots[i]) else { continue };
            self.stats.recv_buffers += 1;
            let seg = segment_bytes_of(len, gro);
            on_buffer(from, &mut buf[..len], seg);
            count += datagram_count(len, seg);
        }
        self.stats.datagrams_received += count as u64;
        Ok(count)
    }

    /// One nonblocking `recvmmsg` into the preallocated buffers; 0 when nothing is queued.
    fn recvmmsg(&mut self, fd: i32) -> Result<usize, IoError> {
        self.stats.syscalls += 1;
        let rx = &mut self.rx;
        for i in 0..RECV_MSGS {
            let hdr = &mut rx.msgs[i].msg_hdr;
            hdr.msg_name = (&raw mut rx.names[i]).cast();
            hdr.msg_namelen = NAME_BYTES as libc::socklen_t;
            hdr.msg_iov = &raw mut rx.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = (&raw mut rx.controls[i]).cast();
            hdr.msg_controllen = CONTROL_BYTES;
            hdr.msg_flags = 0;
        }
        // SAFETY: every header points at this backend's own name/control buffers and at an
        // iovec covering one lent pool slot of RECV_BUFFER_BYTES; all outlive the call.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                rx.msgs.as_mut_ptr(),
                RECV_MSGS as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = last_os_error("recvmmsg");
        match err.errno() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
            _ => Err(err),
        }
    }
}

/// Reads a nonblocking eventfd back to zero (nothing to read is fine: another reader or a
/// spurious wake-up got there first).
pub(crate) fn clear_eventfd(fd: i32) {
    let mut count = 0u64;
    // SAFETY: reads at most 8 bytes into a local u64; an eventfd read is exactly 8 bytes.
    let _ = unsafe { libc::read(fd, (&raw mut count).cast(), std::mem::size_of::<u64>()) };
}

/// Waits up to `timeout_ms` for input on `fd` or, when given, on the eventfd `waker` (which
/// is then read back to zero); true if `fd` is ready.
pub(crate) fn poll_fd_or_wake(
    fd: i32,
    waker: Option<i32>,
    timeout_ms: i32,
) -> Result<bool, IoError> {
    let Some(w) = waker else { return poll_fd(fd, libc::POLLIN, timeout_ms) };
    let mut pfds = [
        libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: w, events: libc::POLLIN, revents: 0 },
    ];
    // SAFETY: `pfds` is an array of two valid pollfds on our stack and we pass its length.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = last_os_error("poll");
        return if err.errno() == Some(libc::EINTR) { Ok(false) } else { Err(err) };
    }
    if pfds[1].revents != 0 {
        clear_eventfd(w);
    }
    Ok(pfds[0].revents != 0)
}

/// Waits up to `timeout_ms` for `events` on `fd`; true if ready.
pub(crate) fn poll_fd(fd: i32, events: i16, timeout_ms: i32) -> Result<bool, IoError> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: `pfd` is one valid pollfd on our stack and we pass a count of 1.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
    if rc < 0 {
        let err = last_os_error("poll");
        return if err.errno() == Some(libc::EINTR) { Ok(false) } else { Err(err) };
    }
    Ok(rc > 0)
}
