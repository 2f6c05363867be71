//! Admin commands on a data directory: `haul user ...`, `haul token mint`, `haul secret ...`,
//! `haul settings ...`.
//! Thin: parsing here, the work in `haul_control` (users, store, token, secret).
//!
//! Invariants:
//! - Every command first opens the data directory the way `haul serve` does (created 0700 if
//!   missing; the server secret's checks; the store's migrations), so an unsafe data
//!   directory is refused here too, with the fix in the message (exit 1).
//! - `haul token mint` prints only the URL on stdout; the token never goes to stderr.
//! - A flag given to `user add`/`user set` replaces that attribute; flags not given leave it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use haul_control::authorize::system_now_s;
use haul_control::authz::Direction;
use haul_control::secret::{self, DEFAULT_ROTATION_GRACE_S, Keyring};
use haul_control::store::Store;
use haul_control::store::settings::{
    KEY_ENCRYPT_TRANSFERS, KEY_POLICY_CAP, KEY_PUBLIC_HOST, KEY_PUBLIC_PORT, KEY_RATE_CAP_BPS,
    KEY_TOKEN_LIFETIME_S,
};
use haul_control::token::hostkey_pin::host_key_fingerprint;
use haul_control::token::{MintRequest, Minter, transfer_url};
use haul_control::users::{
    self, DirectionLimit, User, UserChange, UserName, create_storage_root, format_utc,
    parse_cidr_list, parse_date, parse_ssh_keys,
};

/// Most bytes read from one `--ssh-key` file.
const MAX_SSH_KEY_FILE: u64 = 256 * 1024;
/// The settings `haul settings set` may change (the console owns any others).
const ADMIN_KEYS: [&str; 6] = [
    KEY_ENCRYPT_TRANSFERS,
    KEY_TOKEN_LIFETIME_S,
    KEY_RATE_CAP_BPS,
    KEY_POLICY_CAP,
    KEY_PUBLIC_HOST,
    KEY_PUBLIC_PORT,
];
/// Most users `haul user list` prints.
const MAX_LIST: u32 = 10_000;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and create their storage root DATA_DIR/storage/NAME (mode 0700).
    Add(UserArgs),
    /// Change a user: each flag given replaces that setting; others stay.
    Set(UserArgs),
    /// Disable a user: their tokens and keys stop working at once.
    Disable(NameArgs),
    /// Enable a disabled user.
    Enable(NameArgs),
    /// Print a user's settings.
    Show(NameArgs),
    /// Print every user's name and state.
    List(DataDirArg),
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The appliance's data directory (as given to `haul serve`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The user's name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The user's name: letters, digits, '_', '-', '.', starting with a letter or digit.
    pub name: String,
    /// Networks allowed to log in to the web console ("" clears: any address).
    #[arg(long, value_name = "CIDR,...")]
    pub ip_allow_login: Option<String>,
    /// Networks allowed to upload ("" clears: any address).
    #[arg(long, value_name = "CIDR,...")]
    pub ip_allow_upload: Option<String>,
    /// Networks allowed to download ("" clears: any address).
    #[arg(long, value_name = "CIDR,...")]
    pub ip_allow_download: Option<String>,
    /// Account expiry: YYYY-MM-DD (00:00 UTC that day), YYYY-MM-DDTHH:MM:SSZ, or never.
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
    /// The user may only upload.
    #[arg(long, conflicts_with_all = ["download_only", "any_direction"])]
    pub upload_only: bool,
    /// The user may only download.
    #[arg(long, conflicts_with = "any_direction")]
    pub download_only: bool,
    /// The user may upload and download (clears --upload-only/--download-only).
    #[arg(long)]
    pub any_direction: bool,
    /// The user's SSH public keys (authorized_keys format) for `haul cp`; replaces the
    /// user's keys. Repeat for several files.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a transfer token and print its haul:// URL on stdout.
    Mint(MintArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Download,
    Upload,
}

#[derive(Debug, Args)]
pub struct MintArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The user the transfer runs as (confined to their storage root).
    #[arg(long)]
    pub user: String,
    /// download: the server sends (haul get); upload: the server receives (haul put).
    #[arg(long, value_enum)]
    pub direction: DirectionArg,
    /// The path, relative to the user's storage root, the token allows (and beneath it).
    #[arg(long)]
    pub path: String,
    /// Lifetime: a number with s, m, h or d (e.g. 10m); default: the admin setting (1h).
    #[arg(long, value_parser = parse_duration_s, value_name = "DURATION")]
    pub expires: Option<u64>,
    /// The token allows one transfer (an interrupted one may resume).
    #[arg(long)]
    pub single_use: bool,
    /// Only this client address may use the token.
    #[arg(long, value_name = "IP")]
    pub bind_ip: Option<IpAddr>,
    /// Host in the URL; default: the `public_host` setting (haul serve records it) or localhost.
    #[arg(long)]
    pub host: Option<String>,
    /// Port in the URL; default: the `public_port` setting or 2222.
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Make a new server secret; the old one stays valid for the grace period.
    Rotate {
        #[command(flatten)]
        dir: DataDirArg,
        /// How long tokens sealed under the old secret stay valid (e.g. 24h).
        #[arg(long, value_parser = parse_duration_s, value_name = "DURATION")]
        grace: Option<u64>,
    },
    /// Print the key ids and dates of the secrets held (never their bytes).
    Show(DataDirArg),
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the admin settings tokens take their floor and caps from.
    Show(DataDirArg),
    /// Set one admin setting (docs/STORE.md, "Settings keys").
    Set {
        #[command(flatten)]
        dir: DataDirArg,
        /// encrypt_transfers, token_lifetime_s, rate_cap_bps, policy_cap, public_host,
        /// public_port.
        key: String,
        value: String,
    },
}

/// `10m`, `1h`, `30s`, `2d`, or a number of seconds.
pub fn parse_duration_s(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 10m or 24h"))?;
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("duration {s:?} is zero or too large")),
    }
}

/// Opens DATA_DIR as `haul serve` does: created 0700 if missing, the secret checked (and
/// generated on first use), the store migrated.
fn open_data_dir(dir: &Path) -> Result<(Store, Keyring)> {
    secret::ensure_data_dir(dir)?;
    let ring = secret::load_or_create(dir, system_now_s())?;
    let store =
        Store::open(dir).with_context(|| format!("opening the store in {}", dir.display()))?;
    Ok((store, ring))
}

pub fn user(cmd: UserCommand) -> Result<()> {
    let now = system_now_s();
    match cmd {
        UserCommand::Add(a) => {
            let (store, _) = open_data_dir(&a.dir.data_dir)?;
            let name = UserName::parse(&a.name)?;
            let change = user_change(&a)?;
            let u = store.create_user(&name, &change, now)?;
            let root = create_storage_root(&a.dir.data_dir, &name)
                .with_context(|| format!("creating the storage root of {name}"))?;
            eprintln!("haul: added user {name}, storage {}", root.display());
            print_user(&u);
        }
        UserCommand::Set(a) => {
            let (store, _) = open_data_dir(&a.dir.data_dir)?;
            let name = UserName::parse(&a.name)?;
            let u = store.update_user(&name, &user_change(&a)?, now)?;
            // Repairs a root an interrupted `user add` did not get to create.
            create_storage_root(&a.dir.data_dir, &name)
                .with_context(|| format!("creating the storage root of {name}"))?;
            print_user(&u);
        }
        UserCommand::Disable(n) => set_disabled(&n, true, now)?,
        UserCommand::Enable(n) => set_disabled(&n, false, now)?,
        UserCommand::Show(n) => {
            let (store, _) = open_data_dir(&n.dir.data_dir)?;
            let u = store.user(&n.name)?.with_context(|| format!("no user called {}", n.name))?;
            print_user(&u);
        }
        UserCommand::List(d) => {
            let (store, _) = open_data_dir(&d.data_dir)?;
            for u in store.list_users(MAX_LIST)? {
                let state = if u.is_disabled {
                    "disabled"
                } else if u.is_expired(now) {
                    "expired"
                } else {
                    "active"
                };
                println!("{} {state}", u.name);
            }
        }
    }
    Ok(())
}

fn set_disabled(n: &NameArgs, disabled: bool, now: i64) -> Result<()> {
    let (store, _) = open_data_dir(&n.dir.data_dir)?;
    let name = UserName::parse(&n.name)?;
    let change = UserChange { is_disabled: Some(disabled), ..UserChange::default() };
    let u = store.update_user(&name, &change, now)?;
    print_user(&u);
    Ok(())
}

fn user_change(a: &UserArgs) -> Result<UserChange> {
    let list = |v: &Option<String>| v.as_deref().map(parse_cidr_list).transpose();
    let direction_limit = match (a.upload_only, a.download_only, a.any_direction) {
        (true, _, _) => Some(DirectionLimit::UploadOnly),
        (_, true, _) => Some(DirectionLimit::DownloadOnly),
        (_, _, true) => Some(DirectionLimit::Both),
        _ => None,
    };
    let ssh_keys = if a.ssh_key.is_empty() {
        None
    } else {
        let mut keys = Vec::new();
        for f in &a.ssh_key {
            keys.extend(read_ssh_keys(f)?);
        }
        if keys.len() > users::MAX_SSH_KEYS {
            bail!("a user has at most {} SSH keys", users::MAX_SSH_KEYS);
        }
        Some(keys)
    };
    Ok(UserChange {
        expires_at_s: a.expires.as_deref().map(parse_date).transpose()?,
        direction_limit,
        ip_allow_login: list(&a.ip_allow_login)?,
        ip_allow_upload: list(&a.ip_allow_upload)?,
        ip_allow_download: list(&a.ip_allow_download)?,
        ssh_keys,
        ..UserChange::default()
    })
}

fn read_ssh_keys(path: &Path) -> Result<Vec<users::SshPublicKey>> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SSH_KEY_FILE).read_to_string(&mut text))
        .with_context(|| format!("reading SSH key file {}", path.display()))?;
    let keys = parse_ssh_keys(&text).with_context(|| format!("{}", path.display()))?;
    if keys.is_empty() {
        bail!("{} holds no SSH public key", path.display());
    }
    Ok(keys)
}

fn print_user(u: &User) {
    let cidrs = |l: &[users::Cidr]| {
        if l.is_empty() {
            "any".to_owned()
        } else {
            l.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        }
    };
    println!("name: {}", u.name);
    println!("disabled: {}", u.is_disabled);
    println!("expires: {}", u.expires_at_s.map_or("never".to_owned(), format_utc));
    let limit = match u.direction_limit {
        DirectionLimit::Both => "upload and download",
        DirectionLimit::UploadOnly => "upload-only",
        DirectionLimit::DownloadOnly => "download-only",
    };
    println!("directions: {limit}");
    println!("ip-allow-login: {}", cidrs(&u.ip_allow_login));
    println!("ip-allow-upload: {}", cidrs(&u.ip_allow_upload));
    println!("ip-allow-download: {}", cidrs(&u.ip_allow_download));
    for k in &u.ssh_keys {
        println!("ssh-key: {} {} {}", k.algorithm, k.fingerprint(), k.comment);
    }
}

pub fn token(cmd: TokenCommand) -> Result<()> {
    let TokenCommand::Mint(a) = cmd;
    let (store, ring) = open_data_dir(&a.dir.data_dir)?;
    let settings = store.admin_settings()?;
    let hostkey = host_key_fingerprint(&a.dir.data_dir)?;
    let req = MintRequest {
        user: UserName::parse(&a.user)?,
        direction: match a.direction {
            DirectionArg::Download => Direction::Download,
            DirectionArg::Upload => Direction::Upload,
        },
        paths: vec![a.path.clone()],
        lifetime_s: a.expires,
        single_use: a.single_use,
        client_ip: a.bind_ip,
        package_id: None,
    };
    let (claims, token) = Minter::new(&store, &ring).mint(&req, system_now_s())?;
    let host = a.host.unwrap_or(settings.public_host);
    let port = a.port.unwrap_or(settings.public_port);
    println!("{}", transfer_url(&host, port, &claims.paths[0], &token, &hostkey));
    eprintln!(
        "haul: {} token for {} expires {}{}",
        claims.direction.name(),
        claims.user,
        format_utc(claims.expires_at_s),
        if claims.single_use { " (single use)" } else { "" }
    );
    Ok(())
}

pub fn secret(cmd: SecretCommand) -> Result<()> {
    match cmd {
        SecretCommand::Rotate { dir, grace } => {
            open_data_dir(&dir.data_dir)?;
            let grace_s = grace.map_or(DEFAULT_ROTATION_GRACE_S, |g| g as i64);
            let ring = secret::rotate(&dir.data_dir, system_now_s(), grace_s)?;
            eprintln!(
                "haul: rotated the server secret; token checks pick it up by themselves; \
                 restart haul serve so that everything it signs uses the new one"
            );
            print_keys(&ring);
        }
        SecretCommand::Show(dir) => {
            let (_, ring) = open_data_dir(&dir.data_dir)?;
            print_keys(&ring);
        }
    }
    Ok(())
}

pub fn settings(cmd: SettingsCommand) -> Result<()> {
    let dir = match &cmd {
        SettingsCommand::Show(d) => d,
        SettingsCommand::Set { dir, .. } => dir,
    };
    let (store, _) = open_data_dir(&dir.data_dir)?;
    if let SettingsCommand::Set { key, value, .. } = &cmd {
        if !ADMIN_KEYS.contains(&key.as_str()) {
            bail!("unknown setting {key:?}; known: {}", ADMIN_KEYS.join(", "));
        }
        let before = store.setting(key)?;
        store.set_setting(key, value, system_now_s())?;
        if let Err(e) = store.admin_settings() {
            // Put the old value back: a bad value must not stop every token check.
            match before {
                Some(old) => store.set_setting(key, &old, system_now_s())?,
                None => store.clear_setting(key)?,
            }
            bail!("{e}");
        }
    }
    let s = store.admin_settings()?;
    println!("{KEY_ENCRYPT_TRANSFERS}: {}", s.encrypt_transfers);
    println!("{KEY_TOKEN_LIFETIME_S}: {}", s.token_lifetime_s);
    println!("{KEY_RATE_CAP_BPS}: {}", s.rate_cap_bps);
    println!("{KEY_POLICY_CAP}: {}", s.policy_cap.name());
    println!("{KEY_PUBLIC_HOST}: {}", s.public_host);
    println!("{KEY_PUBLIC_PORT}: {}", s.public_port);
    Ok(())
}

fn print_keys(ring: &Keyring) {
    for k in ring.describe() {
        match k.valid_until_s {
            None => println!("{:08x} current created {}", k.key_id, format_utc(k.created_at_s)),
            Some(t) => println!(
                "{:08x} previous created {} valid until {}",
                k.key_id,
                format_utc(k.created_at_s),
                format_utc(t)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_s("10m"), Ok(600));
        assert_eq!(parse_duration_s("2d"), Ok(172_800));
        assert_eq!(parse_duration_s("45"), Ok(45));
        assert!(parse_duration_s("0s").is_err());
        assert!(parse_duration_s("soon").is_err());
        assert!(parse_duration_s("99999999999999999999d").is_err());
    }
}
