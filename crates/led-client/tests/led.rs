//! led-client against a real Mosquitto: SPEC's payload rules, retained and
//! durable delivery, availability, shutdown, reconnects and clear errors.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::Duration;

use pimqtt_testkit::{wait_until, Broker, Peer, Proc, Stream, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_led-client");

struct Led {
    proc: Proc,
}

pub(crate) fn args(broker: &Broker, state: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--led".to_string(), "sim".into()];
    a.extend(broker.host_args());
    a.push("--state-dir".into());
    a.push(state.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Starts led-client and waits until it is subscribed: its retained
/// `online` is published after the SUBSCRIBE on the same connection, so
/// once a watcher sees it the subscription is in place.
fn start(broker: &Broker, state: &std::path::Path, watcher: &Peer) -> Led {
    let proc = Proc::spawn(EXE, &args(broker, state, &[]));
    watcher.expect("led/status", "online");
    Led { proc }
}

fn watcher(broker: &Broker) -> Peer {
    let p = Peer::connect(broker, "watcher");
    p.subscribe("led/status");
    p
}

#[test]
fn retained_level_sets_the_led_at_start_up() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let user = Peer::connect(&broker, "user");
    user.publish("led", r#"{"level": 42}"#, 2, true);
    let w = watcher(&broker);
    let led = start(&broker, state.path(), &w);
    led.proc.wait_stdout("brightness 42");
}

#[test]
fn payload_rules_of_the_spec() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    let led = start(&broker, state.path(), &w);
    let user = Peer::connect(&broker, "user");
    let cases: &[(&str, &str)] = &[
        (r#"{"level": 42}"#, "brightness 42"),
        (r#"{"level": 42}"#, "brightness 42"), // repeats are applied too
        (r#"{"level": 99.9}"#, "brightness 99"),
        (r#"{"level": -0.7}"#, "brightness 0"),
        (r#"{"level": 250}"#, "brightness 100"),
        (r#"{"level": -3}"#, "brightness 0"),
        (r#"{"level": "55"}"#, "brightness 55"), // the book's page sends strings
        (r#"{"level": "abc"}"#, "brightness 0"), // unknown level: off
        (r#"{"level": 70}"#, "brightness 70"),
        (r#"{"level": true}"#, "brightness 0"),
        (r#"{"level": 71}"#, "brightness 71"),
        (r#"{"level": null}"#, "brightness 0"),
        (r#"{"level": 72}"#, "brightness 72"),
        (r#"{"level": [5]}"#, "brightness 0"),
        (r#"{"level": 73}"#, "brightness 73"),
        (r#"{"level": {"v": 5}}"#, "brightness 0"),
        (r#"{"level": 74}"#, "brightness 74"),
        (r#"{"level": "NaN"}"#, "brightness 0"),
    ];
    for (payload, line) in cases {
        user.publish("led", *payload, 2, false);
        let got = led.proc.wait_line(Stream::Stdout, DEADLINE, |_| true);
        assert_eq!(&got, line, "for payload {payload}");
    }
    // stderr is read on its own thread: wait for it to catch up.
    let warnings = || {
        let err = led.proc.stderr();
        err.iter()
            .filter(|l| l.contains("unknown LED level"))
            .count()
    };
    wait_until("six warnings", DEADLINE, || warnings() >= 6);
    assert_eq!(warnings(), 6, "one warning per non-numeric level");
}

#[test]
fn bad_input_logs_one_line_and_changes_nothing() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    let led = start(&broker, state.path(), &w);
    let user = Peer::connect(&broker, "user");
    user.publish("led", r#"{"level": 30}"#, 2, false);
    led.proc.wait_stdout("brightness 30");

    let big = format!(r#"{{"level": 1, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not JSON"),
        (vec![0xff, 0xfe, 0x00], "not UTF-8"),
        (b"[1, 2]".to_vec(), "not a JSON object"),
        (b"42".to_vec(), "not a JSON object"),
        (br#"{"brightness": 5}"#.to_vec(), "no \"level\""),
        (big.into_bytes(), "larger than"),
        (Vec::new(), "empty payload"),
    ];
    for (i, (payload, why)) in bad.into_iter().enumerate() {
        user.publish("led", payload, 2, false);
        let line = led.proc.wait_stderr(why);
        assert!(line.contains("led:"), "warning names the topic: {line}");
        // A valid level right after shows the bad one printed nothing.
        let sentinel = 31 + i;
        user.publish("led", format!(r#"{{"level": {sentinel}}}"#), 2, false);
        let got = led.proc.wait_line(Stream::Stdout, DEADLINE, |_| true);
        assert_eq!(got, format!("brightness {sentinel}"));
    }
}

#[test]
fn durable_backlog_replays_in_order_after_a_restart() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    let mut led = start(&broker, state.path(), &w);
    led.proc.signal("INT");
    assert_eq!(led.proc.wait_exit(DEADLINE), Some(0));
    w.expect("led/status", "offline");

    let user = Peer::connect(&broker, "user");
    for level in 0..100 {
        user.publish("led", format!(r#"{{"level": {level}}}"#), 2, false);
    }
    let led = start(&broker, state.path(), &w);
    for level in 0..100 {
        led.proc.wait_stdout(&format!("brightness {level}"));
    }
    assert_eq!(
        led.proc.stdout().len(),
        100,
        "each queued message once, in order"
    );
}

#[test]
fn sigint_turns_the_led_off_publishes_offline_and_exits_0() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    let mut led = start(&broker, state.path(), &w);
    let user = Peer::connect(&broker, "user");
    user.publish("led", r#"{"level": 80}"#, 2, true);
    led.proc.wait_stdout("brightness 80");
    led.proc.signal("INT");
    assert_eq!(led.proc.wait_exit(DEADLINE), Some(0));
    assert_eq!(
        led.proc.stdout().last().map(String::as_str),
        Some("brightness 0")
    );
    let m = w.expect("led/status", "offline");
    assert!(!m.retained(), "live delivery of the goodbye");
    // The retained status left behind is offline too.
    let late = watcher(&broker);
    let m = late.expect("led/status", "offline");
    assert!(m.retained());
    // ... and the retained led/state is what the LED does now: off, not
    // the 80 it had (issue 23).
    let state_now = Peer::connect(&broker, "state");
    state_now.subscribe("led/state");
    let m = state_now.expect("led/state", r#"{"level":0}"#);
    assert!(m.retained());
}

#[test]
fn sigterm_is_a_clean_stop_too() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    let mut led = start(&broker, state.path(), &w);
    led.proc.signal("TERM");
    assert_eq!(led.proc.wait_exit(DEADLINE), Some(0));
    assert_eq!(led.proc.stdout(), vec!["brightness 0".to_string()]);
    w.expect("led/status", "offline");
}

#[test]
fn a_killed_client_leaves_its_will() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    let mut led = start(&broker, state.path(), &w);
    led.proc.kill();
    w.expect("led/status", "offline");
}

#[test]
fn reconnects_and_resubscribes_after_a_broker_restart() {
    let mut broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    let led = start(&broker, state.path(), &w);
    broker.restart();
    let w = watcher(&broker); // our own watcher was cut off too
    led.proc.wait_stderr("lost the connection");
    w.expect("led/status", "online");
    let user = Peer::connect(&broker, "user");
    user.publish("led", r#"{"level": 64}"#, 2, false);
    led.proc.wait_stdout("brightness 64");
}

#[test]
fn a_broker_down_at_start_up_is_retried() {
    let mut broker = Broker::start();
    broker.stop();
    let state = tempfile::tempdir().unwrap();
    let led = Proc::spawn(EXE, &args(&broker, state.path(), &[]));
    led.proc_wait_retry();
    broker.restart();
    let w = watcher(&broker);
    w.expect("led/status", "online");
    let user = Peer::connect(&broker, "user");
    user.publish("led", r#"{"level": 12}"#, 2, false);
    led.wait_stdout("brightness 12");
}

trait RetryLine {
    fn proc_wait_retry(&self);
}

impl RetryLine for Proc {
    fn proc_wait_retry(&self) {
        let line = self.wait_stderr("not reachable");
        assert!(line.contains("retrying"), "{line}");
    }
}

fn run_to_exit(args: &[&str]) -> (Option<i32>, Vec<String>) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut p = Proc::spawn(EXE, &args);
    let code = p.wait_exit(DEADLINE);
    (code, p.stderr())
}

#[test]
fn bad_flags_are_a_clear_error() {
    let (code, err) = run_to_exit(&["-q", "5"]);
    assert_eq!(code, Some(2));
    assert!(
        err.iter().any(|l| l.contains("-q") && l.contains("5")),
        "{err:?}"
    );
    let (code, _) = run_to_exit(&["--led", "lamp"]);
    assert_eq!(code, Some(2));
}

#[test]
fn a_missing_ca_file_is_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let (code, err) = run_to_exit(&[
        "--led",
        "sim",
        "--cafile",
        "/nonexistent/ca.crt",
        "--state-dir",
        &dir,
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.iter()
            .any(|l| l.contains("cannot read --cafile /nonexistent/ca.crt")),
        "{err:?}"
    );
}

#[test]
fn gpio_without_a_pi_is_a_clear_error() {
    if std::path::Path::new("/dev/gpiomem").exists() {
        return; // on a real Pi this is not an error
    }
    let (code, err) = run_to_exit(&["--led", "gpio"]);
    assert_eq!(code, Some(2));
    assert!(
        err.iter()
            .any(|l| l.contains("no usable Raspberry Pi GPIO") && l.contains("--led sim")),
        "{err:?}"
    );
}

#[test]
fn help_is_long_only_and_h_is_the_host() {
    let (code, _) = run_to_exit(&["--help"]);
    assert_eq!(code, Some(0));
    let mut p = Proc::spawn(EXE, &["--help".to_string()]);
    p.wait_exit(DEADLINE);
    let out = p.stdout().join("\n");
    assert!(
        out.contains("--host") && out.contains("mosquitto_pub"),
        "{out}"
    );
}

/// Issue 10: settings that can never work are refused at start: exit 2,
/// one line naming the setting, and no connection attempt (the broker
/// never sees an `online`).
#[test]
fn settings_that_can_never_work_are_refused_before_connecting() {
    let broker = Broker::start();
    let w = watcher(&broker);
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let host = broker.host_args();
    let port = host[3].as_str();
    // (flags, MQTT_HOST, what the line must name)
    let good = format!("127.0.0.1:{port}");
    let cases: [(&[&str], Option<&str>, &str); 9] = [
        (&["-h", "127.0.0.1", "-p", "0"], None, "--port 0"),
        (&["-h", "", "-p", port], None, "host is empty"),
        (&["-p", port], Some(""), "host is empty"),
        // Issue 14: a host list with a typo in any entry.
        (
            &["-h", good.as_str(), "-h", "127.0.0.1:0"],
            None,
            "not 1 to 65535",
        ),
        (&["-h", "127.0.0.1:99999"], None, "not 1 to 65535"),
        (&["-h", "localhost,,127.0.0.1"], None, "empty entry"),
        (&[], Some("127.0.0.1:1884,"), "empty entry"),
        (
            &["-h", "127.0.0.1", "-p", port, "-i", "led\u{7}client"],
            None,
            "U+0007",
        ),
        (
            &["-h", "127.0.0.1", "-p", port, "-i", "led\nclient"],
            None,
            "U+000A",
        ),
    ];
    for (flags, mqtt_host, part) in cases {
        let a: Vec<String> = ["--led", "sim", "--state-dir", &dir]
            .iter()
            .chain(flags)
            .map(|s| s.to_string())
            .collect();
        let env: Vec<(&str, &str)> = mqtt_host.map(|h| ("MQTT_HOST", h)).into_iter().collect();
        let mut p = Proc::spawn_env(EXE, &a, &env);
        assert_eq!(p.wait_exit(DEADLINE), Some(2), "{flags:?} {env:?}");
        let err = p.stderr();
        assert_eq!(err.len(), 1, "one line for {flags:?}: {err:#?}");
        assert!(err[0].contains(part), "{flags:?}: {}", err[0]);
        assert!(p.stdout().is_empty(), "{flags:?}: {:?}", p.stdout());
    }
    assert!(
        w.drain(std::time::Duration::from_millis(300)).is_empty(),
        "no client connected"
    );
}

/// Two programs with one client id (a service and a manual run): the broker
/// hands the session to whichever connected last, so they take turns. On
/// MQTT 3.1.1 the broker says nothing; each program learns it as a fact from
/// its instance mark (another process wrote it after us), says so once and
/// backs off instead of taking turns every second for ever.
#[test]
fn a_sibling_with_the_same_id_is_named_once_and_backed_off() {
    let broker = Broker::start();
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Proc::spawn(EXE, &args(&broker, s1.path(), &["-i", "twin"]));
    let b = Proc::spawn(EXE, &args(&broker, s2.path(), &["-i", "twin"]));
    let told = |p: &Proc| {
        p.stderr()
            .iter()
            .filter(|l| l.contains("another client is using the client id \"twin\""))
            .count()
    };
    wait_until("a warning naming the id", Duration::from_secs(30), || {
        told(&a) + told(&b) > 0
    });
    // Watch the turns for a while: at 1 s apiece there would be ~20 more.
    let connects = |p: &Proc| {
        p.stderr()
            .iter()
            .filter(|l| l.contains("connected to"))
            .count()
    };
    let before = connects(&a) + connects(&b);
    std::thread::sleep(Duration::from_secs(20));
    let turns = connects(&a) + connects(&b) - before;
    assert!(turns <= 12, "{turns} connects in 20 s: no back-off");
    assert!(told(&a) <= 1 && told(&b) <= 1, "said more than once");
}

/// Issue 10: a state directory that cannot be written is one line naming it
/// and what to do, and exit 2 (not Paho's "Persistence error" later on).
#[test]
fn an_unwritable_state_dir_is_named_at_start() {
    let broker = Broker::start();
    let file = tempfile::NamedTempFile::new().unwrap();
    // A directory inside a plain file cannot exist, whoever we are (root
    // writes anywhere else).
    let dir = file.path().join("state");
    let dir = dir.display().to_string();
    let mut p = Proc::spawn(EXE, &args(&broker, std::path::Path::new(&dir), &[]));
    assert_eq!(p.wait_exit(DEADLINE), Some(2));
    let err = p.stderr();
    assert_eq!(err.len(), 1, "{err:#?}");
    assert!(
        err[0].contains(&format!("cannot write the state directory {dir}"))
            && err[0].contains("--state-dir"),
        "{}",
        err[0]
    );
}

/// SPEC's `led/state`: retained, what the LED does (off at start, then each
/// applied level; a level that is not a number turns it off), not what was
/// asked (an out-of-range level is clamped).
#[test]
fn led_state_follows_what_the_led_does() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = watcher(&broker);
    w.subscribe("led/state");
    let led = start(&broker, state.path(), &w);
    w.expect("led/state", r#"{"level":0}"#);
    let user = Peer::connect(&broker, "user");
    user.publish("led", r#"{"level": 250}"#, 2, true);
    led.proc.wait_stdout("brightness 100");
    w.expect("led/state", r#"{"level":100}"#);
    user.publish("led", r#"{"level": "abc"}"#, 2, true);
    w.expect("led/state", r#"{"level":0}"#);
    user.publish("led", r#"{"level": 40}"#, 2, true);
    w.expect("led/state", r#"{"level":40}"#);
    let late = Peer::connect(&broker, "late");
    late.subscribe("led/state");
    assert!(late.expect("led/state", r#"{"level":40}"#).retained());
}

#[test]
fn a_bad_discovery_prefix_is_a_clear_error() {
    let (code, err) = run_to_exit(&["--ha-discovery=home/#"]);
    assert_eq!(code, Some(2));
    assert!(
        err.iter()
            .any(|l| l.contains("not a discovery prefix")
                && l.contains("--ha-discovery=homeassistant")),
        "{err:?}"
    );
}
