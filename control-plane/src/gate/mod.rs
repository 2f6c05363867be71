//! The SSH gate (docs/GATE.md): our own russh server, with no OS account and no shell. It is a
//! thin adapter: every decision is a pure function of [`policy`] or [`limits`], and the
//! transfer itself is [`transfer::serve_transfer`] over the exec channel.
//!
//! Invariants:
//! - Only publickey authentication is advertised. The shipped client key (public by design) is
//!   accepted only for [`TRANSFER_ACCOUNT`], and that login only runs a token transfer; a user's
//!   own key (the store's users table, through [`Authorizer::is_user_key`]) is accepted for
//!   that user's `haul cp` transfers.
//! - One session channel per connection, and on it one exec of exactly `haul-transfer`.
//!   Shell, pty, subsystems, env, X11, agent and TCP/stream-local forwarding are refused with
//!   a message and an exit status; a refused pty/env/X11/agent request taints the channel, so
//!   the exec that follows is refused too, naming the first refusal.
//! - Limits are taken as RAII slots before what they limit starts; every refusal is logged
//!   and counted ([`limits::Counters`]). An address with too many failed authentications in a
//!   window is blocked for a backoff: its connections are refused, logins in progress fail.
//! - When a connection ends or its channel closes (a killed client), its transfer's data
//!   plane is cancelled at once ([`CancelHandle`]): the shards stop, their sockets close, and
//!   the use is recorded as interrupted, so a rerun is not refused `in-use`.
//! - The token is read from the channel by `serve_transfer`, never from the exec command.

pub mod limits;
pub mod policy;
pub mod transfer;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};

use haul_io::transfer::CancelHandle;

use crate::authz::Authorizer;
use limits::{Counters, Ledger, Slot};
use policy::RefusalKind;
use transfer::{DataPlaneConfig, Identity};

/// The shared transfer account: the SSH user name `haul get`/`put` log in as.
pub const TRANSFER_ACCOUNT: &str = "haul";
/// Session channels one connection may open (one transfer per connection).
pub const MAX_CHANNELS_PER_CONNECTION: usize = 1;
/// SSH extended-data stream number of stderr.
const STDERR: u32 = 1;

/// What every connection handler shares.
pub struct GateState {
    pub authz: Arc<dyn Authorizer>,
    /// The shipped client key's public half.
    pub shipped_key: PublicKey,
    pub ledger: Arc<Ledger>,
    pub counters: Arc<Counters>,
    pub dataplane: DataPlaneConfig,
}

impl std::fmt::Debug for GateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateState")
            .field("ledger", &self.ledger)
            .field("dataplane", &self.dataplane)
            .finish_non_exhaustive()
    }
}

/// The russh server: one [`Conn`] per accepted connection.
#[derive(Debug, Clone)]
pub struct GateServer {
    pub state: Arc<GateState>,
}

impl russh::server::Server for GateServer {
    type Handler = Conn;
    fn new_client(&mut self, peer: Option<SocketAddr>) -> Conn {
        let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        let slot = if self.state.ledger.is_auth_blocked(ip, std::time::Instant::now()) {
            Err(RefusalKind::AuthLimit)
        } else {
            self.state.ledger.connect(ip)
        };
        if let Err(kind) = &slot {
            self.state.counters.refuse(*kind, Some(ip));
        }
        Conn {
            state: self.state.clone(),
            ip,
            slot,
            login: None,
            channels: HashMap::new(),
            exec_used: false,
            cancel: None,
        }
    }
}

struct Chan {
    channel: Option<Channel<Msg>>,
    /// The first refused request on this channel, if any.
    taint: Option<RefusalKind>,
}

/// One connection's state.
pub struct Conn {
    state: Arc<GateState>,
    ip: IpAddr,
    /// The connection's slot, or why there is none (then everything is refused).
    slot: Result<Slot, RefusalKind>,
    login: Option<Identity>,
    channels: HashMap<ChannelId, Chan>,
    exec_used: bool,
    /// Stops the running transfer's data plane when the connection or its channel goes away.
    cancel: Option<(ChannelId, CancelHandle)>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some((_, c)) = &self.cancel {
            c.cancel();
        }
    }
}

fn publickey_only() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey][..])
}

fn reject() -> Auth {
    Auth::Reject { proceed_with_methods: Some(publickey_only()), partial_success: false }
}

/// The server's russh configuration for these limits.
pub fn ssh_config(
    host_key: russh::keys::PrivateKey,
    limits: &limits::Limits,
) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-haul_gate".into()),
        methods: publickey_only(),
        keys: vec![host_key],
        max_auth_attempts: limits.auth_attempts,
        inactivity_timeout: Some(limits.idle_timeout),
        auth_rejection_time: std::time::Duration::from_millis(200),
        auth_rejection_time_initial: Some(std::time::Duration::from_millis(0)),
        nodelay: true,
        ..Default::default()
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("ip", &self.ip)
            .field("login", &self.login)
            .field("exec_used", &self.exec_used)
            .finish_non_exhaustive()
    }
}

impl Conn {
    fn identity_of(&self, user: &str, key: &PublicKey) -> Option<Identity> {
        if self.slot.is_err()
            || self.state.ledger.is_auth_blocked(self.ip, std::time::Instant::now())
        {
            return None;
        }
        if user == TRANSFER_ACCOUNT && key.key_data() == self.state.shipped_key.key_data() {
            return Some(Identity::TransferAccount);
        }
        // Never the shipped key as a user's own key: it is public.
        let line = key.to_openssh().ok()?;
        if key.key_data() != self.state.shipped_key.key_data()
            && self.state.authz.is_user_key(user, &line)
        {
            return Some(Identity::User(user.to_string()));
        }
        None
    }

    fn refuse(&self, kind: RefusalKind) {
        self.state.counters.refuse(kind, Some(self.ip));
    }

    /// A failed authentication: counted, and against the address's window.
    fn auth_failed(&self) -> Auth {
        self.refuse(RefusalKind::Auth);
        if let Some(backoff) = self.state.ledger.on_auth_failure(self.ip, std::time::Instant::now())
        {
            self.refuse(RefusalKind::AuthLimit);
            tracing::warn!(ip = %self.ip, backoff_s = backoff.as_secs(), "address blocked for failed authentications");
        }
        reject()
    }

    /// Answer a shell/exec/subsystem request with the refusal: message, exit status, close.
    fn refuse_on_channel(
        &mut self,
        id: ChannelId,
        kind: RefusalKind,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.refuse(kind);
        self.channels.remove(&id);
        session.channel_success(id)?;
        session.extended_data(id, STDERR, format!("{}\n", kind.message()))?;
        session.exit_status_request(id, kind.exit_status())?;
        session.eof(id)?;
        session.close(id)
    }

    /// Refuse a pre-exec request (pty, env, X11, agent): fail it and taint the channel.
    fn taint(
        &mut self,
        id: ChannelId,
        kind: RefusalKind,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.refuse(kind);
        if let Some(c) = self.channels.get_mut(&id) {
            c.taint.get_or_insert(kind);
        }
        // Say why before the failure: a client that gives up on the failure (ssh -t does)
        // has still printed the reason.
        session.extended_data(id, STDERR, format!("{}\n", kind.message()))?;
        session.channel_failure(id)
    }

    fn start_transfer(&mut self, id: ChannelId, session: &mut Session) -> Result<(), russh::Error> {
        let slot = match self.state.ledger.transfer(self.ip) {
            Ok(s) => s,
            Err(kind) => return self.refuse_on_channel(id, kind, session),
        };
        let (Some(identity), Some(channel)) =
            (self.login.clone(), self.channels.get_mut(&id).and_then(|c| c.channel.take()))
        else {
            return self.refuse_on_channel(id, RefusalKind::Auth, session);
        };
        self.exec_used = true;
        session.channel_success(id)?;
        tracing::info!(ip = %self.ip, "transfer session started");
        let handle = session.handle();
        let state = self.state.clone();
        let ip = self.ip;
        let cancel = CancelHandle::default();
        self.cancel = Some((id, cancel.clone()));
        let stream = channel.into_stream();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut bridge = tokio_util::io::SyncIoBridge::new(stream);
            let result = transfer::serve_transfer(
                &mut bridge,
                &*state.authz,
                &identity,
                ip,
                &state.dataplane,
                &cancel,
            );
            let (status, message) = match &result {
                Ok(served) => {
                    state.counters.transfers_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(%ip, direction = served.direction.name(), bytes = served.report.bytes, "transfer complete");
                    (0, None)
                }
                Err(e) => {
                    state
                        .counters
                        .transfers_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if matches!(e, crate::session::SessionError::Unauthorized(_)) {
                        state.counters.refuse(RefusalKind::Token, Some(ip));
                    }
                    tracing::warn!(%ip, error = %e, "transfer failed");
                    (policy::EXIT_FAILED, Some(format!("haul gate: {e}\n")))
                }
            };
            let _ = std::io::Write::flush(&mut bridge);
            let rt = tokio::runtime::Handle::current();
            rt.block_on(async move {
                if let Some(m) = message {
                    let _ =
                        handle.extended_data(id, STDERR, bytes::Bytes::from(m.into_bytes())).await;
                }
                let _ = handle.exit_status_request(id, status).await;
                let _ = handle.eof(id).await;
                let _ = handle.close(id).await;
            });
            drop(bridge);
        });
        Ok(())
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self.slot.as_ref().err().map(|k| format!("{}\n", k.message())))
    }

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(self.auth_failed())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.identity_of(user, offer.public_key).is_some() {
            Ok(Auth::Accept)
        } else {
            Ok(self.auth_failed())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.identity_of(user, key.public_key) {
            Some(id) => {
                tracing::info!(ip = %self.ip, user, "ssh login");
                self.login = Some(id);
                Ok(Auth::Accept)
            }
            None => Ok(self.auth_failed()),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.slot.is_err()
            || self.channels.len() >= MAX_CHANNELS_PER_CONNECTION
            || self.exec_used
        {
            self.refuse(RefusalKind::SecondExec);
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), Chan { channel: Some(channel), taint: None });
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((id, c)) = &self.cancel
            && *id == channel
        {
            c.cancel();
        }
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(RefusalKind::X11);
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(RefusalKind::TcpForwarding);
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(RefusalKind::TcpForwarding);
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(RefusalKind::TcpForwarding);
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        _socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(RefusalKind::TcpForwarding);
        Ok(false)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.taint(channel, RefusalKind::Pty, session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.taint(channel, RefusalKind::X11, session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.taint(channel, RefusalKind::Env, session)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(RefusalKind::AgentForwarding);
        if let Some(c) = self.channels.get_mut(&channel) {
            c.taint.get_or_insert(RefusalKind::AgentForwarding);
        }
        // russh answers the failure itself when this returns false.
        Ok(false)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = self.channels.get(&channel).and_then(|c| c.taint).unwrap_or(RefusalKind::Shell);
        self.refuse_on_channel(channel, kind, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_on_channel(channel, RefusalKind::Subsystem, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let taint = self.channels.get(&channel).and_then(|c| c.taint);
        let kind = if let Some(t) = taint {
            Some(t)
        } else if !policy::is_transfer_command(data) {
            Some(RefusalKind::Command)
        } else if self.exec_used {
            Some(RefusalKind::SecondExec)
        } else {
            None
        };
        match kind {
            Some(k) => self.refuse_on_channel(channel, k, session),
            None => self.start_transfer(channel, session),
        }
    }
}
