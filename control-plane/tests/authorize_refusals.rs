//! The token side of the gate at the library level: every refused-token case of issue 5's
//! acceptance list gets its stable code, and the grants that must pass do (on a real store in
//! a real data directory, with real storage roots and symlinks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier};

use haul_control::authorize::TokenAuthorizer;
use haul_control::authz::{
    Authorizer, Direction, Grant, Outcome, Refusal, RefusalCode, SecretToken, TransferAsk,
};
use haul_control::secret::Keyring;
use haul_control::store::Store;
use haul_control::store::settings::AdminSettings;
use haul_control::token::{MintRequest, Minter};
use haul_control::users::{
    DirectionLimit, UserChange, UserName, create_storage_root, parse_cidr_list,
};
use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use zeroize::Zeroizing;

const T0: i64 = 1_800_000_000;

struct World {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    ring: Keyring,
    now: Arc<AtomicI64>,
    auth: TokenAuthorizer,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let ring = haul_control::secret::load_or_create(dir.path(), T0).unwrap();
        let alice = UserName::parse("alice").unwrap();
        store.create_user(&alice, &UserChange::default(), T0).unwrap();
        let root = create_storage_root(dir.path(), &alice).unwrap();
        std::fs::create_dir_all(root.join("pkg/sub")).unwrap();
        std::fs::write(root.join("pkg/f.bin"), b"data").unwrap();
        std::fs::write(root.join("pkg/sub/g.bin"), b"data").unwrap();
        std::fs::create_dir_all(root.join("inbox")).unwrap();
        let now = Arc::new(AtomicI64::new(T0));
        let auth = World::authorizer(&store, &dir, &now);
        World { dir, store, ring, now, auth }
    }

    fn authorizer(
        store: &Arc<Store>,
        dir: &tempfile::TempDir,
        now: &Arc<AtomicI64>,
    ) -> TokenAuthorizer {
        let ring = haul_control::secret::load(dir.path()).unwrap();
        let clock = now.clone();
        TokenAuthorizer::new(store.clone(), ring, dir.path())
            .unwrap()
            .with_clock(move || clock.load(Ordering::SeqCst))
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("storage/alice")
    }

    fn mint(&self, direction: Direction, path: &str, single_use: bool) -> SecretToken {
        self.mint_with(direction, path, single_use, None)
    }

    fn mint_with(
        &self,
        direction: Direction,
        path: &str,
        single_use: bool,
        client_ip: Option<IpAddr>,
    ) -> SecretToken {
        let req = MintRequest {
            user: UserName::parse("alice").unwrap(),
            direction,
            paths: vec![path.to_owned()],
            lifetime_s: Some(600),
            single_use,
            client_ip,
            package_id: None,
        };
        let (_, t) = Minter::new(&self.store, &self.ring).mint(&req, self.now()).unwrap();
        SecretToken(Zeroizing::new(t.expose().to_owned()))
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn set_user(&self, change: UserChange) {
        let alice = UserName::parse("alice").unwrap();
        self.store.update_user(&alice, &change, self.now()).unwrap();
    }
}

fn ask<'a>(token: &'a SecretToken, direction: Direction, path: &'a str) -> TransferAsk<'a> {
    TransferAsk {
        token,
        direction,
        path,
        client_ip: "192.0.2.10".parse().unwrap(),
        suite: None,
        rate_bps: None,
        min_rate_bps: None,
        policy: None,
    }
}

fn refused(r: Result<Grant, Refusal>) -> Refusal {
    match r {
        Ok(g) => panic!("granted, expected a refusal: {g:?}"),
        Err(e) => e,
    }
}

fn code(r: Result<Grant, Refusal>) -> RefusalCode {
    refused(r).code
}

#[test]
fn a_good_token_is_granted_with_the_root_and_path() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    let g = w.auth.authorize(&ask(&t, Direction::Download, "/pkg/f.bin")).unwrap();
    assert_eq!(g.user, "alice");
    assert_eq!(g.direction, Direction::Download);
    assert_eq!(g.root, std::fs::canonicalize(w.root()).unwrap());
    assert_eq!(g.paths, vec!["pkg/f.bin".to_owned()]);
    assert_eq!(g.suite, SuiteId::Aes128CfbCmac);
    assert!(!g.single_use);
    let up = w.mint(Direction::Upload, "/inbox", false);
    let g = w.auth.authorize(&ask(&up, Direction::Upload, "/inbox/new/dir")).unwrap();
    assert_eq!(g.paths, vec!["inbox/new/dir".to_owned()]);
}

#[test]
fn an_expired_token_is_refused() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    w.now.store(T0 + 600, Ordering::SeqCst);
    let r = refused(w.auth.authorize(&ask(&t, Direction::Download, "/pkg")));
    assert_eq!(r.code, RefusalCode::Expired);
    assert_eq!(r.to_string(), "unauthorized to transfer: expired");
}

#[test]
fn a_token_with_one_bit_flipped_is_refused() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    let mut raw = URL_SAFE_NO_PAD.decode(t.0.as_str()).unwrap();
    let last = raw.len() - 20;
    raw[last] ^= 0x10;
    let bad = SecretToken(Zeroizing::new(URL_SAFE_NO_PAD.encode(&raw)));
    assert_eq!(
        code(w.auth.authorize(&ask(&bad, Direction::Download, "/pkg"))),
        RefusalCode::Tampered
    );
    let junk = SecretToken(Zeroizing::new("not a token".into()));
    assert_eq!(
        code(w.auth.authorize(&ask(&junk, Direction::Download, "/pkg"))),
        RefusalCode::Malformed
    );
}

#[test]
fn the_wrong_direction_is_refused() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Upload, "/pkg"))),
        RefusalCode::WrongDirection
    );
}

#[test]
fn paths_outside_the_token_or_the_root_are_refused() {
    let w = World::new();
    let root = w.root();
    std::os::unix::fs::symlink("/etc", root.join("pkg/evil")).unwrap();
    std::os::unix::fs::symlink("sub", root.join("pkg/inside")).unwrap();
    let t = w.mint(Direction::Download, "/pkg", false);
    for path in
        ["/pkg/../../../etc/passwd", "/pkg/sub/../f.bin", "//etc/passwd", "/etc/passwd", "/pkgx"]
    {
        let r = refused(w.auth.authorize(&ask(&t, Direction::Download, path)));
        assert_eq!(r.code, RefusalCode::PathOutside, "{path}: {}", r.detail);
    }
    for path in ["/pkg/evil/passwd", "/pkg/evil", "/pkg/inside/g.bin"] {
        let r = refused(w.auth.authorize(&ask(&t, Direction::Download, path)));
        assert_eq!(r.code, RefusalCode::PathOutside, "{path}: {}", r.detail);
    }
    // An upload through a symlinked directory is refused too, even to a name that is missing.
    let up = w.mint(Direction::Upload, "/", false);
    let r = refused(w.auth.authorize(&ask(&up, Direction::Upload, "/pkg/evil/new")));
    assert_eq!(r.code, RefusalCode::PathOutside, "{}", r.detail);
    // A token whose own path is the root still cannot leave it.
    let r = refused(w.auth.authorize(&ask(&up, Direction::Upload, "/../bob")));
    assert_eq!(r.code, RefusalCode::PathOutside);
    // A missing download is gone, not outside.
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Download, "/pkg/nope"))),
        RefusalCode::PackageGone
    );
}

#[test]
fn a_token_from_another_server_secret_is_refused() {
    let w = World::new();
    let other = World::new();
    let t = other.mint(Direction::Download, "/pkg", false);
    let r = refused(w.auth.authorize(&ask(&t, Direction::Download, "/pkg")));
    assert_eq!(r.code, RefusalCode::UnknownKey, "{}", r.detail);
}

#[test]
fn a_single_use_token_used_twice_concurrently_is_refused_once() {
    let w = Arc::new(World::new());
    let t = Arc::new(w.mint(Direction::Download, "/pkg/f.bin", true));
    let barrier = Arc::new(Barrier::new(8));
    let results: Vec<Result<Grant, Refusal>> = (0..8)
        .map(|_| {
            let (w, t, b) = (w.clone(), t.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                w.auth.authorize(&ask(&t, Direction::Download, "/pkg/f.bin"))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let grants: Vec<&Grant> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(grants.len(), 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code, RefusalCode::InUse, "{}", r.detail);
    }
    let grant = grants[0];
    w.auth.finish(grant, Outcome::Complete);
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Download, "/pkg/f.bin"))),
        RefusalCode::AlreadyUsed
    );
}

#[test]
fn an_interrupted_single_use_token_resumes_for_its_file_only() {
    let w = World::new();
    let t = w.mint(Direction::Upload, "/inbox", true);
    let g = w.auth.authorize(&ask(&t, Direction::Upload, "/inbox/big.bin")).unwrap();
    w.auth.record_partial(&g, "inbox/big.bin", 1 << 20);
    w.auth.finish(&g, Outcome::Interrupted);
    let r = refused(w.auth.authorize(&ask(&t, Direction::Upload, "/inbox/other.bin")));
    assert_eq!(r.code, RefusalCode::AlreadyUsed, "{}", r.detail);
    let again = w.auth.authorize(&ask(&t, Direction::Upload, "/inbox/big.bin")).unwrap();
    assert_eq!(w.auth.resume_partial_bytes(&again, "inbox/big.bin"), Some(1 << 20));
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Upload, "/inbox/big.bin"))),
        RefusalCode::InUse
    );
    w.auth.finish(&again, Outcome::Complete);
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Upload, "/inbox/big.bin"))),
        RefusalCode::AlreadyUsed
    );
}

#[test]
fn a_use_left_active_by_a_dead_server_can_resume_in_the_next() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg/f.bin", true);
    let g = w.auth.authorize(&ask(&t, Direction::Download, "/pkg/f.bin")).unwrap();
    drop(g); // the process "dies" without finish
    let next = World::authorizer(&w.store, &w.dir, &w.now);
    assert!(next.authorize(&ask(&t, Direction::Download, "/pkg/f.bin")).is_ok());
}

#[test]
fn disabled_or_expired_users_are_refused() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    w.set_user(UserChange { is_disabled: Some(true), ..UserChange::default() });
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Download, "/pkg"))),
        RefusalCode::UserDisabled
    );
    w.set_user(UserChange {
        is_disabled: Some(false),
        expires_at_s: Some(Some(T0 + 10)),
        ..UserChange::default()
    });
    assert!(w.auth.authorize(&ask(&t, Direction::Download, "/pkg")).is_ok());
    w.now.store(T0 + 10, Ordering::SeqCst);
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Download, "/pkg"))),
        RefusalCode::UserExpired
    );
}

#[test]
fn upload_only_and_download_only_users_are_held_to_it() {
    let w = World::new();
    let down = w.mint(Direction::Download, "/pkg", false);
    let up = w.mint(Direction::Upload, "/inbox", false);
    w.set_user(UserChange {
        direction_limit: Some(DirectionLimit::UploadOnly),
        ..UserChange::default()
    });
    assert_eq!(
        code(w.auth.authorize(&ask(&down, Direction::Download, "/pkg"))),
        RefusalCode::UploadOnly
    );
    assert!(w.auth.authorize(&ask(&up, Direction::Upload, "/inbox")).is_ok());
    w.set_user(UserChange {
        direction_limit: Some(DirectionLimit::DownloadOnly),
        ..UserChange::default()
    });
    assert_eq!(
        code(w.auth.authorize(&ask(&up, Direction::Upload, "/inbox"))),
        RefusalCode::DownloadOnly
    );
    assert!(w.auth.authorize(&ask(&down, Direction::Download, "/pkg")).is_ok());
}

#[test]
fn an_address_outside_the_allow_list_or_the_binding_is_refused() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    w.set_user(UserChange {
        ip_allow_download: Some(parse_cidr_list("10.0.0.0/8").unwrap()),
        ..UserChange::default()
    });
    let mut a = ask(&t, Direction::Download, "/pkg");
    assert_eq!(code(w.auth.authorize(&a)), RefusalCode::AddressNotAllowed);
    a.client_ip = "10.1.2.3".parse().unwrap();
    assert!(w.auth.authorize(&a).is_ok());
    // The upload list is separate: an empty one admits everyone.
    let up = w.mint(Direction::Upload, "/inbox", false);
    assert!(w.auth.authorize(&ask(&up, Direction::Upload, "/inbox")).is_ok());
    // A token bound to one client address.
    let bound =
        w.mint_with(Direction::Upload, "/inbox", false, Some("198.51.100.1".parse().unwrap()));
    assert_eq!(
        code(w.auth.authorize(&ask(&bound, Direction::Upload, "/inbox"))),
        RefusalCode::AddressNotAllowed
    );
    let mut b = ask(&bound, Direction::Upload, "/inbox");
    b.client_ip = "::ffff:198.51.100.1".parse().unwrap();
    assert!(w.auth.authorize(&b).is_ok());
}

#[test]
fn an_old_secret_token_passes_inside_the_grace_period_and_is_refused_after() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    let rotated = haul_control::secret::rotate(w.dir.path(), T0 + 5, 100).unwrap();
    w.auth.replace_keyring(rotated);
    w.now.store(T0 + 104, Ordering::SeqCst);
    assert!(w.auth.authorize(&ask(&t, Direction::Download, "/pkg")).is_ok());
    w.now.store(T0 + 105, Ordering::SeqCst);
    let r = refused(w.auth.authorize(&ask(&t, Direction::Download, "/pkg")));
    assert_eq!(r.code, RefusalCode::UnknownKey);
    assert!(r.detail.contains("grace period ended"), "{}", r.detail);
}

#[test]
fn integrity_only_is_refused_while_encrypt_transfers_is_on() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    let mut a = ask(&t, Direction::Download, "/pkg");
    a.suite = Some(SuiteId::IntegrityCmac);
    assert_eq!(code(w.auth.authorize(&a)), RefusalCode::CipherTooWeak);
    a.suite = Some(SuiteId::Aes128Gcm);
    assert_eq!(w.auth.authorize(&a).unwrap().suite, SuiteId::Aes128Gcm);

    // Minted while encryption was off: integrity-only passes, until an admin turns it on.
    let off = AdminSettings { encrypt_transfers: false, ..AdminSettings::default() };
    w.store.set_admin_settings(&off, T0).unwrap();
    let weak = w.mint(Direction::Download, "/pkg", false);
    let mut a = ask(&weak, Direction::Download, "/pkg");
    a.suite = Some(SuiteId::IntegrityCmac);
    assert_eq!(w.auth.authorize(&a).unwrap().suite, SuiteId::IntegrityCmac);
    w.store.set_admin_settings(&AdminSettings::default(), T0).unwrap();
    assert_eq!(code(w.auth.authorize(&a)), RefusalCode::CipherTooWeak);
}

#[test]
fn rate_and_policy_are_clamped_to_the_caps() {
    let w = World::new();
    let caps = AdminSettings {
        rate_cap_bps: 100_000_000,
        policy_cap: Policy::Fair,
        ..AdminSettings::default()
    };
    w.store.set_admin_settings(&caps, T0).unwrap();
    let t = w.mint(Direction::Download, "/pkg", false);
    let mut a = ask(&t, Direction::Download, "/pkg");
    let g = w.auth.authorize(&a).unwrap();
    assert_eq!((g.rate_bps, g.min_rate_bps, g.policy), (100_000_000, 0, Policy::Fair));
    a.rate_bps = Some(5_000_000_000);
    a.min_rate_bps = Some(4_000_000_000);
    a.policy = Some(Policy::Fixed);
    let g = w.auth.authorize(&a).unwrap();
    assert_eq!((g.rate_bps, g.min_rate_bps, g.policy), (100_000_000, 100_000_000, Policy::Fair));
    a.rate_bps = Some(1_000_000);
    a.min_rate_bps = None;
    a.policy = Some(Policy::Low);
    let g = w.auth.authorize(&a).unwrap();
    assert_eq!((g.rate_bps, g.policy), (1_000_000, Policy::Low));
}

#[test]
fn a_token_naming_a_package_is_refused_without_a_package_store() {
    let w = World::new();
    let req = MintRequest {
        user: UserName::parse("alice").unwrap(),
        direction: Direction::Download,
        paths: vec!["/pkg".into()],
        lifetime_s: None,
        single_use: false,
        client_ip: None,
        package_id: Some("p-1".into()),
    };
    let (_, t) = Minter::new(&w.store, &w.ring).mint(&req, T0).unwrap();
    let t = SecretToken(Zeroizing::new(t.expose().to_owned()));
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Download, "/pkg"))),
        RefusalCode::PackageGone
    );
}

#[test]
fn a_deleted_user_is_not_entitled() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    w.store.with_conn(|c| Ok(c.execute("DELETE FROM users WHERE name = 'alice'", [])?)).unwrap();
    assert_eq!(
        code(w.auth.authorize(&ask(&t, Direction::Download, "/pkg"))),
        RefusalCode::NotEntitled
    );
}

#[test]
fn refusal_details_never_hold_the_token() {
    let w = World::new();
    let t = w.mint(Direction::Download, "/pkg", false);
    let r = refused(w.auth.authorize(&ask(&t, Direction::Upload, "/pkg")));
    assert!(!r.detail.contains(t.0.as_str()));
    assert!(!format!("{r:?}").contains(t.0.as_str()));
    assert!(!format!("{:?}", ask(&t, Direction::Upload, "/pkg")).contains(t.0.as_str()));
}

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIImHtiLu4/ui8qSx74NU3l8zibip/LD64hCAmlHx21Ru";

#[test]
fn haul_cp_with_a_users_own_key_is_confined_and_restricted() {
    let w = World::new();
    w.set_user(UserChange {
        ssh_keys: Some(haul_control::users::parse_ssh_keys(ALICE_KEY).unwrap()),
        ..UserChange::default()
    });
    assert!(w.auth.verify_user_key("alice", ALICE_KEY));
    assert!(w.auth.verify_user_key("alice", &format!("{ALICE_KEY} a comment")));
    assert!(!w.auth.verify_user_key("bob", ALICE_KEY));
    assert!(!w.auth.verify_user_key("alice", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGc0"));
    assert!(!w.auth.verify_user_key("alice", ""));

    let none = SecretToken(Zeroizing::new(String::new()));
    let g =
        w.auth.authorize_for_user("alice", &ask(&none, Direction::Download, "/pkg/f.bin")).unwrap();
    assert_eq!(g.paths, vec!["pkg/f.bin".to_owned()]);
    assert!(!g.single_use);
    assert!(w.auth.authorize_for_user("alice", &ask(&none, Direction::Upload, "/new/dir")).is_ok());
    for path in ["/../bob/x", "//etc/passwd", "/pkg/../../x"] {
        let r = refused(w.auth.authorize_for_user("alice", &ask(&none, Direction::Upload, path)));
        assert_eq!(r.code, RefusalCode::PathOutside, "{path}");
    }
    std::os::unix::fs::symlink("/etc", w.root().join("etc")).unwrap();
    let r = refused(
        w.auth.authorize_for_user("alice", &ask(&none, Direction::Download, "/etc/passwd")),
    );
    assert_eq!(r.code, RefusalCode::PathOutside);

    let mut a = ask(&none, Direction::Download, "/pkg/f.bin");
    a.suite = Some(SuiteId::IntegrityCmac);
    assert_eq!(code(w.auth.authorize_for_user("alice", &a)), RefusalCode::CipherTooWeak);
    w.set_user(UserChange {
        direction_limit: Some(DirectionLimit::UploadOnly),
        ..UserChange::default()
    });
    assert_eq!(
        code(w.auth.authorize_for_user("alice", &ask(&none, Direction::Download, "/pkg/f.bin"))),
        RefusalCode::UploadOnly
    );
    w.set_user(UserChange {
        ip_allow_upload: Some(parse_cidr_list("10.0.0.0/8").unwrap()),
        ..UserChange::default()
    });
    assert_eq!(
        code(w.auth.authorize_for_user("alice", &ask(&none, Direction::Upload, "/x"))),
        RefusalCode::AddressNotAllowed
    );
    w.set_user(UserChange { is_disabled: Some(true), ..UserChange::default() });
    assert_eq!(
        code(w.auth.authorize_for_user("alice", &ask(&none, Direction::Upload, "/x"))),
        RefusalCode::UserDisabled
    );
    assert_eq!(
        code(w.auth.authorize_for_user("nobody", &ask(&none, Direction::Upload, "/x"))),
        RefusalCode::NotEntitled
    );
}

#[test]
fn a_rotation_by_another_process_is_picked_up_without_a_restart() {
    let w = World::new();
    // `haul secret rotate` in another process, then a token minted under the new secret.
    let rotated = haul_control::secret::rotate(w.dir.path(), T0, 3600).unwrap();
    let req = MintRequest {
        user: UserName::parse("alice").unwrap(),
        direction: Direction::Download,
        paths: vec!["/pkg".into()],
        lifetime_s: Some(600),
        single_use: false,
        client_ip: None,
        package_id: None,
    };
    let (_, t) = Minter::new(&w.store, &rotated).mint(&req, T0).unwrap();
    let t = SecretToken(Zeroizing::new(t.expose().to_owned()));
    assert!(w.auth.authorize(&ask(&t, Direction::Download, "/pkg")).is_ok());
    // Tokens of the old secret still pass inside the grace period.
    let old = w.mint(Direction::Download, "/pkg", false);
    assert!(w.auth.authorize(&ask(&old, Direction::Download, "/pkg")).is_ok());
    // Another server's token is still refused (the reload finds nothing new).
    let other = World::new().mint(Direction::Download, "/pkg", false);
    assert_eq!(
        code(w.auth.authorize(&ask(&other, Direction::Download, "/pkg"))),
        RefusalCode::UnknownKey
    );
}
