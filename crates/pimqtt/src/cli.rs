//! The flags every program shares. They follow `mosquitto_sub`/`mosquitto_pub`
//! so the book's commands carry over: `-h` is the host, and `--help` is
//! long-only, as in mosquitto's tools.
//!
//! Each binary flattens [`CommonArgs`] into its own parser and sets
//! `disable_help_flag = true` on its command so `-h` is free for the host,
//! and `disable_version_flag = true` so `-V` is free for the protocol
//! version (`--help` and `--version` stay, long-only).

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Args};

use crate::store::SyncMode;
use crate::topics;

/// Broker connection and session flags (SPEC, "Common to every binary").
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Broker connection (as in mosquitto_sub)")]
pub struct CommonArgs {
    /// Broker host name or address; for a cluster, several: a
    /// comma-separated list or a repeated -h, each HOST or HOST:PORT, tried
    /// in order when connecting and reconnecting.
    // A Vec so that -h may be repeated (clap refuses a repeated single
    // value); the entries are split and checked by `servers`.
    #[arg(short = 'h', long, env = "MQTT_HOST", default_value = "localhost", action = ArgAction::Append, value_name = "HOST[:PORT][,...]")]
    pub host: Vec<String>,

    /// Broker port, for hosts given without one [default: 1883, or 8883 with TLS].
    #[arg(short = 'p', long, env = "MQTT_PORT")]
    pub port: Option<u16>,

    /// MQTT client id. Keep it stable: the broker keeps a durable session
    /// (queued messages, subscriptions) under this name.
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub client_id: Option<String>,

    /// QoS of subscriptions and publications (0, 1 or 2).
    #[arg(short = 'q', long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(0..=2))]
    pub qos: i32,

    /// MQTT version to speak: 311 (3.1.1, the book's) or 5. Also spelled
    /// mqttv311 / mqttv5, as in mosquitto's tools. MQTT 5 adds session and
    /// message expiry and says why the broker refused or dropped us.
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", default_value = "311", value_parser = parse_protocol)]
    pub protocol: Protocol,

    /// Ask for a clean session: the broker forgets this client's
    /// subscriptions and queued messages when it disconnects (with -V 5:
    /// clean start, and a session expiry of 0 unless --session-expiry says
    /// otherwise).
    #[arg(long)]
    pub clean: bool,

    /// MQTT 5 only: how long the broker keeps this client's session
    /// (subscriptions, queued messages) after it disconnects, in seconds, or
    /// "never" for no expiry [default: never, i.e. durable as with 3.1.1;
    /// 0 for a clean session].
    #[arg(long, value_name = "SECONDS", value_parser = parse_session_expiry)]
    pub session_expiry: Option<u32>,

    /// Accepted and ignored, as `mosquitto_sub -c` (sessions are durable by default).
    #[arg(short = 'c', action = ArgAction::SetTrue, hide = true)]
    pub durable: bool,

    /// Keepalive in seconds: how soon the broker notices a dead client
    /// (and publishes its will).
    #[arg(short = 'k', long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=65535))]
    pub keepalive: u64,

    /// User name for brokers that require a password.
    #[arg(short = 'u', long, env = "MQTT_USERNAME")]
    pub username: Option<String>,

    /// Password. Prefer --pw-file or the MQTT_PASSWORD environment variable,
    /// used when neither -P nor --pw-file is given: a command line is
    /// visible to `ps`.
    // MQTT_PASSWORD is read by `connect`, not by clap, so that an exported
    // password does not clash with an explicit --pw-file.
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,

    /// Read the password from the first line of this file.
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    pub pw_file: Option<PathBuf>,

    /// CA certificate (PEM) that signed the broker's certificate; turns on TLS.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,

    /// Client certificate (PEM) for brokers that ask for one; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Do not check that the broker's certificate names its host (testing only).
    #[arg(long)]
    pub insecure: bool,

    /// Protocol-level trace on stderr, like `mosquitto_sub -d`.
    #[arg(short = 'd', long)]
    pub debug: bool,

    /// Where Paho keeps in-flight QoS 1/2 messages across restarts
    /// [default: $STATE_DIRECTORY, else $XDG_STATE_HOME/pi-mqtt, else ~/.local/state/pi-mqtt].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// When the state directory's files reach the disk. always: nothing is
    /// acknowledged before it is on the disk, so a power cut loses nothing
    /// and repeats at most the message being applied; about one disk sync
    /// per message. batched (opt-in, 4x faster to drain a backlog): synced
    /// every 0.1 s; a power cut can lose the messages of the last 0.1 s
    /// and apply old ones again after newer ones (measured: 854 of a
    /// 5,000-message backlog lost over 20 cuts). never (opt-in): left to the
    /// kernel (about 30 s); a crash of the program loses nothing, a power
    /// cut more than batched (4,959 over 20 cuts). See docs/reliability.md,
    /// "--sync".
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = SyncMode::Always)]
    pub sync: SyncMode,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,

    /// Print the version (long only: -V is the MQTT protocol version, as in
    /// mosquitto's tools).
    // (Each program sets clap's `disable_version_flag` for that: an
    // internal, kept out of the help text.)
    #[arg(long, action = ArgAction::Version)]
    pub version: Option<bool>,
}

impl CommonArgs {
    /// The session expiry interval sent with MQTT 5 (SPEC: durable by
    /// default, as with 3.1.1): `--session-expiry`, else 0 with `--clean`,
    /// else [`SESSION_NEVER_EXPIRES`]. `None` with MQTT 3.1.1.
    pub fn session_expiry(&self) -> Option<u32> {
        match self.protocol {
            Protocol::V311 => None,
            Protocol::V5 => Some(self.session_expiry.unwrap_or(if self.clean {
                0
            } else {
                SESSION_NEVER_EXPIRES
            })),
        }
    }

    /// TLS is on when any TLS option is given.
    pub fn tls(&self) -> bool {
        self.cafile.is_some() || self.cert.is_some() || self.insecure
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls() { 8883 } else { 1883 })
    }

    /// The brokers to try, in order: each `-h` entry with its own port or
    /// `-p`'s. Refuses what [`parse_hosts`] refuses.
    pub fn servers(&self) -> Result<Vec<Server>, BadSetting> {
        let port = self.port();
        Ok(parse_hosts(&self.host)?
            .into_iter()
            .map(|(host, p)| Server {
                host,
                port: p.unwrap_or(port),
            })
            .collect())
    }

    /// The Paho server URIs for these flags, in the order they are tried.
    pub fn server_uris(&self) -> Result<Vec<String>, BadSetting> {
        let scheme = if self.tls() { "ssl" } else { "tcp" };
        Ok(self.servers()?.iter().map(|s| s.uri(scheme)).collect())
    }

    /// The directory for Paho's file persistence.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        default_state_dir(
            std::env::var_os("STATE_DIRECTORY")
                .as_deref()
                .map(Path::new),
            std::env::var_os("XDG_STATE_HOME").as_deref().map(Path::new),
            std::env::var_os("HOME").as_deref().map(Path::new),
        )
    }
}

/// The MQTT version a program speaks (`-V`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT 3.1.1, the book's and the default.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V311 => "MQTT 3.1.1",
            Protocol::V5 => "MQTT 5",
        })
    }
}

/// Clap value parser for `-V`: the spellings of `mosquitto_sub -V`
/// (`31` is refused: MQTT 3.1 has no use here and Paho would fall back).
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "311" | "mqttv311" | "3.1.1" => Ok(Protocol::V311),
        "5" | "mqttv5" => Ok(Protocol::V5),
        _ => Err(format!(
            "{s:?} is not an MQTT version: give 311 (or mqttv311) for MQTT 3.1.1, \
             5 (or mqttv5) for MQTT 5"
        )),
    }
}

/// The session expiry that means "keep the session for ever" (MQTT 5,
/// 3.1.2.11.2: 0xFFFFFFFF does not expire). The default, so that `-V 5`
/// changes nothing a program relies on: a pump away for a week still finds
/// its subscriptions and its queued messages (stale commands are dropped by
/// their own message expiry, not by forgetting the session). Mosquitto's
/// `persistent_client_expiration` still applies, as with 3.1.1.
pub const SESSION_NEVER_EXPIRES: u32 = u32::MAX;

/// Clap value parser for `--session-expiry`: whole seconds up to
/// 4294967295, or `never` (the same as 4294967295).
pub fn parse_session_expiry(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(SESSION_NEVER_EXPIRES);
    }
    t.parse::<u32>().map_err(|_| {
        format!("{s:?} is not a session expiry: give whole seconds (0 to 4294967295) or \"never\"")
    })
}

/// One broker of the `-h` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// A name or address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
}

impl Server {
    fn uri(&self, scheme: &str) -> String {
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port) // IPv6 literal
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A setting that can never work: refused at start with one line saying
/// what is wrong and what to do, instead of retrying a connection for ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting(pub String);

impl fmt::Display for BadSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadSetting {}

impl CommonArgs {
    /// Refuses settings that can never work: port 0, an empty host or one
    /// with spaces or a scheme, a client id MQTT does not allow. Every
    /// program calls this once at start, before connecting; the error is
    /// bad configuration (exit code 2).
    pub fn check(&self) -> Result<(), BadSetting> {
        if self.port == Some(0) {
            return Err(BadSetting(
                "--port 0 (or MQTT_PORT=0) is not a port a broker listens on: give 1 to 65535, \
                 or leave it out for 1883 (8883 with TLS)"
                    .into(),
            ));
        }
        parse_hosts(&self.host)?;
        if self.session_expiry.is_some() && self.protocol != Protocol::V5 {
            return Err(BadSetting(
                "--session-expiry needs MQTT 5: add -V 5 (with MQTT 3.1.1 a session is either \
                 kept for ever or, with --clean, not at all)"
                    .into(),
            ));
        }
        if let Some(id) = &self.client_id {
            check_client_id(id)?;
        }
        Ok(())
    }
}

/// The broker hosts (`-h`, repeated or comma-separated, or `MQTT_HOST`):
/// each entry is `HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT` or a bare IPv6
/// address (more than one `:`, so no port of its own). Returns each host with
/// its own port, if it has one. Refused, naming the entry: an empty list or
/// entry (`a,,b`, a trailing comma), a URL, a space, a port that is not 1 to
/// 65535: each a typo that would otherwise be retried for ever.
pub fn parse_hosts(list: &[String]) -> Result<Vec<(String, Option<u16>)>, BadSetting> {
    if list.iter().all(|h| h.trim().is_empty()) {
        return Err(BadSetting(
            "the broker host is empty (-h or MQTT_HOST): give a host name or address, \
             e.g. -h localhost, or unset MQTT_HOST"
                .into(),
        ));
    }
    let mut out = Vec::new();
    for host in list {
        for entry in host.split(',') {
            out.push(parse_host(host, entry)?);
        }
    }
    Ok(out)
}

fn parse_host(list: &str, entry: &str) -> Result<(String, Option<u16>), BadSetting> {
    let shown = crate::payload::quote(entry.as_bytes());
    if entry.trim().is_empty() {
        return Err(BadSetting(format!(
            "the broker host list {} has an empty entry: separate host names with single commas",
            crate::payload::quote(list.as_bytes())
        )));
    }
    if entry.contains("://") {
        return Err(BadSetting(format!(
            "broker host {shown} is a URL: give the host name alone (e.g. -h broker.lan or \
             -h broker.lan:1884), with --cafile for TLS"
        )));
    }
    if entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BadSetting(format!(
            "broker host {shown} contains a space or a control character: \
             give a host name or address"
        )));
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(BadSetting(format!(
                "broker host {shown} opens a [ without closing it: write an IPv6 address \
                 as [::1] or [::1]:1883"
            )));
        };
        match after {
            "" => (v6, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => {
                    return Err(BadSetting(format!(
                        "broker host {shown} has something after the ]: write [::1]:1883"
                    )))
                }
            },
        }
    } else if entry.matches(':').count() > 1 {
        (entry, None) // a bare IPv6 address
    } else {
        match entry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err(BadSetting(format!(
            "broker host {shown} has a port but no host: write HOST:PORT, e.g. localhost:1884"
        )));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(BadSetting(format!(
                    "broker host {shown} has the port {}, which is not 1 to 65535: \
                     write HOST:PORT, e.g. localhost:1884",
                    crate::payload::quote(p.as_bytes())
                )))
            }
        },
    };
    Ok((host.to_string(), port))
}

/// A client id (`-i`) MQTT and Mosquitto accept: UTF-8 of 1 to 65535
/// bytes with no control or non-characters (Mosquitto drops such a client
/// as a protocol error). Not empty: the session is kept under this name
/// (and the connection code refuses an empty one too).
pub fn check_client_id(id: &str) -> Result<(), BadSetting> {
    let shown = crate::payload::quote(id.as_bytes());
    if id.is_empty() {
        return Err(BadSetting(
            "the client id (-i) is empty: give a name, or leave -i out for the program's \
             default id"
                .into(),
        ));
    }
    if id.len() > 65535 {
        return Err(BadSetting(format!(
            "client id {shown} is longer than MQTT's 65535 bytes: give a shorter -i"
        )));
    }
    if let Some(c) = topics::forbidden_char(id) {
        return Err(BadSetting(format!(
            "client id {shown} contains the character U+{:04X}, which MQTT does not allow \
             (the broker would drop the connection): give -i without control characters",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Clap value parser for a duration in seconds (`0.5`, `5`): positive and
/// finite, at most a day, so a typo cannot make a timer never fire.
pub fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !n.is_finite() || n <= 0.0 || n > 86_400.0 {
        return Err(format!("{s} must be more than 0 and at most 86400 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(n))
}

/// Clap value parser for a percentage 0..100 (a tank level, a threshold).
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !n.is_finite() || !(0.0..=100.0).contains(&n) {
        return Err(format!("{s} is not a percentage from 0 to 100"));
    }
    Ok(n)
}

/// systemd's `StateDirectory=` wins, then the XDG base directory spec.
fn default_state_dir(systemd: Option<&Path>, xdg: Option<&Path>, home: Option<&Path>) -> PathBuf {
    if let Some(dir) = systemd.filter(|d| !d.as_os_str().is_empty()) {
        // StateDirectory= may list several, separated by ':'; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first);
    }
    if let Some(dir) = xdg.filter(|d| d.is_absolute()) {
        return dir.join("pi-mqtt");
    }
    match home.filter(|d| d.is_absolute()) {
        Some(home) => home.join(".local/state/pi-mqtt"),
        None => std::env::temp_dir().join("pi-mqtt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(
        version = "test",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> Result<CommonArgs, clap::Error> {
        let mut all = vec!["prog"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.common)
    }

    #[test]
    fn mosquitto_style_short_flags() {
        let c = parse(&[
            "-h",
            "broker.lan",
            "-p",
            "1999",
            "-i",
            "me",
            "-q",
            "1",
            "-c",
            "-k",
            "60",
        ])
        .expect("valid flags");
        assert_eq!(c.server_uris(), Ok(vec!["tcp://broker.lan:1999".into()]));
        assert_eq!(c.client_id.as_deref(), Some("me"));
        assert_eq!(c.qos, 1);
        assert!(!c.clean, "-c is a no-op, not --clean");
        assert_eq!(c.keepalive, 60);
    }

    #[test]
    fn help_names_no_internals() {
        // Issue 23: --version's help said "each program sets
        // `disable_version_flag`".
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--version"), "{help}");
        assert!(!help.contains("disable_"), "{help}");
    }

    #[test]
    fn tls_moves_the_default_port() {
        let c = parse(&["--cafile", "ca.crt"]).expect("valid flags");
        assert_eq!(c.server_uris(), Ok(vec!["ssl://localhost:8883".into()]));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["-q", "3"]).is_err());
        assert!(parse(&["-p", "70000"]).is_err());
        assert!(parse(&["-k", "1"]).is_err());
        assert!(parse(&["--cert", "c.pem"]).is_err(), "--cert needs --key");
    }

    #[test]
    fn seconds_and_percentages_are_checked() {
        assert_eq!(
            parse_seconds("0.25"),
            Ok(std::time::Duration::from_millis(250))
        );
        for bad in ["0", "-1", "NaN", "inf", "abc", "100000"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_percent("49.5"), Ok(49.5));
        for bad in ["-0.1", "100.1", "NaN", "x"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_dir_prefers_systemd_then_xdg() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            default_state_dir(p("/var/lib/led").as_deref(), None, None),
            PathBuf::from("/var/lib/led")
        );
        assert_eq!(
            default_state_dir(None, p("/x").as_deref(), p("/home/pi").as_deref()),
            PathBuf::from("/x/pi-mqtt")
        );
        assert_eq!(
            default_state_dir(None, None, p("/home/pi").as_deref()),
            PathBuf::from("/home/pi/.local/state/pi-mqtt")
        );
    }

    #[test]
    fn settings_that_can_never_work_are_refused() {
        let check = |args: &[&str]| parse(args).expect("flags parse").check();
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["-p", "1", "-h", "::1", "-i", "bébé"]), Ok(()));
        assert_eq!(check(&["-h", "a.lan,b.lan:1884"]), Ok(()));
        for (bad, part) in [
            (&["-p", "0"][..], "--port 0"),
            (&["-h", ""], "host is empty"),
            (&["-h", "  "], "host is empty"),
            (&["-h", "a,,b"], "empty entry"),
            (&["-h", "tcp://broker"], "URL"),
            (&["-h", "my broker"], "space"),
            (&["-h", "a,"], "empty entry"),
            (&["-h", "a", "-h", ""], "empty entry"),
            (&["-h", "a:0"], "not 1 to 65535"),
            (&["-h", "a:70000"], "not 1 to 65535"),
            (&["-h", "a:x"], "not 1 to 65535"),
            (&["-h", "a:"], "not 1 to 65535"),
            (&["-h", ":1884"], "no host"),
            (&["-h", "[::1"], "without closing"),
            (&["-h", "[::1]1884"], "after the ]"),
            (&["-i", "pump\u{7}"], "U+0007"),
            (&["-i", ""], "client id (-i) is empty"),
            (&["-i", "", "--clean"], "client id (-i) is empty"),
        ] {
            let e = check(bad).expect_err(part).to_string();
            assert!(e.contains(part) && !e.contains('\n'), "{bad:?}: {e}");
        }
        let e = check(&["-i", "a\u{1b}[2J"])
            .expect_err("escape")
            .to_string();
        assert!(e.contains("\"a.[2J\"") && e.contains("-i"), "{e}");
    }

    #[test]
    fn a_host_list_becomes_paho_server_uris_in_order() {
        let uris = |args: &[&str]| parse(args).expect("flags parse").server_uris();
        let v = |u: &[&str]| Ok(u.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            uris(&["-h", "a.lan,b.lan:1884", "-p", "1999"]),
            v(&["tcp://a.lan:1999", "tcp://b.lan:1884"])
        );
        assert_eq!(
            uris(&["-h", "a", "-h", "127.0.0.1:2000,c"]),
            v(&["tcp://a:1883", "tcp://127.0.0.1:2000", "tcp://c:1883"]),
            "-h repeated: the lists join, in order"
        );
        assert_eq!(
            uris(&["-h", "::1", "-h", "[fe80::1]:1884", "-h", "[::2]"]),
            v(&[
                "tcp://[::1]:1883",
                "tcp://[fe80::1]:1884",
                "tcp://[::2]:1883"
            ])
        );
        assert_eq!(
            uris(&["-h", "a,b:8884", "--cafile", "ca.pem"]),
            v(&["ssl://a:8883", "ssl://b:8884"])
        );
    }

    #[test]
    fn protocol_version_and_session_expiry() {
        let c = parse(&[]).expect("defaults");
        assert_eq!((c.protocol, c.session_expiry()), (Protocol::V311, None));
        for (args, want) in [
            (&["-V", "5"][..], Some(SESSION_NEVER_EXPIRES)),
            (
                &["--protocol-version", "mqttv5"],
                Some(SESSION_NEVER_EXPIRES),
            ),
            (&["-V", "5", "--clean"], Some(0)),
            (&["-V", "5", "--session-expiry", "3600"], Some(3600)),
            (&["-V", "5", "--clean", "--session-expiry", "60"], Some(60)),
            (&["-V", "5", "--session-expiry", "never"], Some(u32::MAX)),
            (&["-V", "mqttv311"], None),
            (&["-V", "311", "--clean"], None),
        ] {
            let c = parse(args).expect("valid flags");
            assert_eq!(c.check(), Ok(()), "{args:?}");
            assert_eq!(c.session_expiry(), want, "{args:?}");
        }
        for bad in ["4", "3", "mqttv31", "v5", ""] {
            let e = parse(&["-V", bad]).expect_err(bad).to_string();
            assert!(e.contains("311") && e.contains("mqttv5"), "{bad}: {e}");
        }
        for bad in ["-1", "1.5", "4294967296", "forever"] {
            assert!(
                parse(&["-V", "5", "--session-expiry", bad]).is_err(),
                "{bad}"
            );
        }
        let e = parse(&["--session-expiry", "60"])
            .expect("parses")
            .check()
            .expect_err("needs -V 5")
            .to_string();
        assert!(e.contains("-V 5") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn client_ids_follow_mosquitto() {
        for bad in ["\0", "a\nb", "\u{7f}", "\u{9f}", "\u{fffe}", "\u{1ffff}"] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_client_id(&"x".repeat(65536)).is_err());
        assert!(check_client_id("LEDClient").is_ok());
    }
}
