//! led-client against the secured broker: a real Mosquitto started from
//! mosquitto/secure.conf, with the CA, certificate, passwords and ACL that
//! scripts/secure-setup makes, in a temp dir of the test's own.
//!
//! What must hold: TLS with a password works end to end; anonymous clients,
//! wrong passwords and servers the client does not trust are refused with a
//! clear error and a non-zero exit; the ACL keeps each login to its topics.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use paho_mqtt as mqtt;
use pimqtt_testkit::{free_port, Broker, Peer, Proc, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_led-client");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs scripts/secure-setup into a fresh temp dir: a CA of its own, a
/// server certificate for localhost, passwords, and per-device logins for
/// ids 1 and 2.
fn secure_setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("scripts/secure-setup"))
        .arg("--dir")
        .arg(dir.path())
        .args(["--ids", "1,2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "secure-setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing secret on the terminal: no password appears in its output.
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for user in ["led-client", "admin", "pump-sim", "pump-1"] {
        let pw = password(dir.path(), user);
        assert!(pw.len() >= 20, "{user}'s password is too short");
        assert!(
            !printed.contains(&pw),
            "secure-setup printed {user}'s password"
        );
    }
    dir
}

/// mosquitto/secure.conf with its placeholders filled in, the MQTT over TLS
/// listener on the broker's free port.
fn start_broker(secure: &Path) -> Broker {
    let conf = std::fs::read_to_string(repo().join("mosquitto/secure.conf")).unwrap();
    let text = conf
        .replace("@MQTTS_PORT@", "@PORT@")
        .replace("@WSS_PORT@", &free_port().to_string())
        .replace("@SECURE_DIR@", &secure.display().to_string())
        .replace("@WEB_DIR@", &repo().join("web").display().to_string())
        .replace(" @BIND@", " 127.0.0.1");
    Broker::start_conf(&text)
}

fn password(secure: &Path, user: &str) -> String {
    let text = std::fs::read_to_string(secure.join("passwords").join(user)).unwrap();
    text.lines().next().unwrap().to_string()
}

fn tls_uri(broker: &Broker) -> String {
    format!("ssl://127.0.0.1:{}", broker.port)
}

/// Logs in as `user` over TLS, trusting `ca`.
fn login(
    broker: &Broker,
    ca: &Path,
    user: Option<(&str, &str)>,
    id: &str,
) -> Result<Peer, mqtt::Error> {
    let ssl = mqtt::SslOptionsBuilder::new()
        .trust_store(ca)
        .unwrap()
        .finalize();
    let mut opts = mqtt::ConnectOptionsBuilder::new_v3();
    opts.clean_session(true).ssl_options(ssl);
    if let Some((name, pw)) = user {
        opts.user_name(name).password(pw);
    }
    Peer::connect_with(&tls_uri(broker), id, opts.finalize())
}

fn peer(broker: &Broker, secure: &Path, user: &str) -> Peer {
    let pw = password(secure, user);
    login(
        broker,
        &secure.join("ca.crt"),
        Some((user, &pw)),
        &format!("test-{user}"),
    )
    .unwrap_or_else(|e| panic!("{user} could not log in: {e}"))
}

/// led-client's flags for this broker, plus `extra`.
fn led_args(broker: &Broker, ca: &Path, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["--led", "sim", "-h", "127.0.0.1", "-p"]
        .map(String::from)
        .to_vec();
    a.push(broker.port.to_string());
    a.push("--cafile".into());
    a.push(ca.display().to_string());
    a.push("--state-dir".into());
    a.push(state.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn led_client_works_over_tls_with_a_password() {
    let secure = secure_setup();
    let broker = start_broker(secure.path());
    let state = tempfile::tempdir().unwrap();
    let ca = secure.path().join("ca.crt");
    let admin = peer(&broker, secure.path(), "admin");
    admin.subscribe("led/status");

    // The password from a file (--pw-file): the way the service runs it.
    let pw_file = secure.path().join("passwords/led-client");
    let pw_file = pw_file.display().to_string();
    let mut led = Proc::spawn(
        EXE,
        &led_args(
            &broker,
            &ca,
            state.path(),
            &["-u", "led-client", "--pw-file", &pw_file],
        ),
    );
    admin.expect("led/status", "online");
    admin.publish("led", r#"{"level": 42}"#, 2, true);
    led.wait_stdout("brightness 42");
    led.signal("INT");
    assert_eq!(led.wait_exit(DEADLINE), Some(0));
    admin.expect("led/status", "offline");

    // The password from the environment (MQTT_PASSWORD, as in the env file),
    // the user name too; the retained level is back at start-up.
    let pw = password(secure.path(), "led-client");
    let mut led = Proc::spawn_env(
        EXE,
        &led_args(&broker, &ca, state.path(), &[]),
        &[("MQTT_USERNAME", "led-client"), ("MQTT_PASSWORD", &pw)],
    );
    admin.expect("led/status", "online");
    led.wait_stdout("brightness 42");
    admin.publish("led", r#"{"level": 7}"#, 2, true);
    led.wait_stdout("brightness 7");
    led.signal("TERM");
    assert_eq!(led.wait_exit(DEADLINE), Some(0));
}

/// Runs led-client until it gives up; returns its stderr.
fn refused(broker: &Broker, ca: &Path, state: &Path, extra: &[&str]) -> String {
    let mut led = Proc::spawn(EXE, &led_args(broker, ca, state, extra));
    let code = led.wait_exit(DEADLINE);
    let stderr = led.stderr().join("\n");
    assert_eq!(
        code,
        Some(pimqtt::EXIT_CONFIG),
        "led-client should exit 2; stderr: {stderr}"
    );
    assert!(
        led.stdout().iter().all(|l| l == "brightness 0"),
        "no level applied: {:?}",
        led.stdout()
    );
    stderr
}

#[test]
fn anonymous_clients_and_wrong_passwords_are_refused() {
    let secure = secure_setup();
    let broker = start_broker(secure.path());
    let state = tempfile::tempdir().unwrap();
    let ca = secure.path().join("ca.crt");

    let err = refused(&broker, &ca, state.path(), &[]);
    assert!(
        err.contains("refused the connection") && err.contains("-u"),
        "anonymous: {err}"
    );

    let err = refused(
        &broker,
        &ca,
        state.path(),
        &["-u", "led-client", "-P", "not-the-password"],
    );
    assert!(
        err.contains("refused the connection") && err.contains("password is wrong"),
        "wrong password: {err}"
    );

    // Another user's password does not open led-client's account.
    let other = secure.path().join("passwords/admin").display().to_string();
    let err = refused(
        &broker,
        &ca,
        state.path(),
        &["-u", "led-client", "--pw-file", &other],
    );
    assert!(
        err.contains("password is wrong"),
        "someone else's password: {err}"
    );

    // The same for a plain Paho client.
    assert!(
        login(&broker, &ca, None, "anon").is_err(),
        "an anonymous client got in"
    );
    assert!(
        login(&broker, &ca, Some(("admin", "guess")), "guess").is_err(),
        "a wrong password got in"
    );
}

#[test]
fn a_server_the_client_does_not_trust_is_refused() {
    let secure = secure_setup();
    let broker = start_broker(secure.path());
    let state = tempfile::tempdir().unwrap();
    // A second, unrelated CA: the broker's certificate is not signed by it.
    let other = secure_setup();
    let other_ca = other.path().join("ca.crt");

    let pw_file = secure
        .path()
        .join("passwords/led-client")
        .display()
        .to_string();
    let err = refused(
        &broker,
        &other_ca,
        state.path(),
        &["-u", "led-client", "--pw-file", &pw_file],
    );
    assert!(
        err.contains("TLS connection") && err.contains("not signed by --cafile"),
        "untrusted server: {err}"
    );

    let pw = password(secure.path(), "admin");
    assert!(
        login(&broker, &other_ca, Some(("admin", &pw)), "admin").is_err(),
        "an untrusted server was accepted"
    );
    // A missing CA file is a configuration error, reported as such.
    let err = refused(
        &broker,
        Path::new("/nonexistent/ca.crt"),
        state.path(),
        &["-u", "led-client", "--pw-file", &pw_file],
    );
    assert!(err.contains("cannot read --cafile"), "missing CA: {err}");
}

#[test]
fn the_acl_keeps_each_login_to_its_own_topics() {
    let secure = secure_setup();
    let broker = start_broker(secure.path());
    let admin = peer(&broker, secure.path(), "admin");
    admin.subscribe("#");

    // (login, denied publications, an allowed publication sent last as a marker)
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "pump-sim",
            &["tank/1/level", "tank/1/status", "led", "alarm/1"],
            "pump/1/state",
        ),
        (
            "pump-1",
            &["tank/1/level", "pump/2/state", "pump/1/command"],
            "pump/1/state",
        ),
        ("tank-1", &["tank/2/level", "pump/1/state"], "tank/1/level"),
        (
            "led-client",
            &["pump/1/command", "pump/2/command", "led"],
            "led/status",
        ),
        (
            "tank-sensor",
            &["pump/1/command", "pump/1/state"],
            "tank/1/level",
        ),
        (
            "web",
            &["tank/1/level", "alarm/1", "controller/status"],
            "led",
        ),
    ];
    let mut seen = Vec::new();
    for (user, denied, allowed) in cases {
        for topic in *denied {
            // Mosquitto 2.x acknowledges a denied QoS 1 publication, then
            // drops the connection (MQTT 3.1.1 allows either): a fresh
            // connection per attempt. Once the acknowledgement is back, the
            // broker has routed the message (or not) to the watcher.
            let p = peer(&broker, secure.path(), user);
            let msg = mqtt::Message::new(*topic, format!("denied {user}"), 1);
            let _ = p.client.publish(msg);
        }
        // An allowed publication by the same user, as a marker: the broker
        // handles one message at a time, so anything let through above
        // reaches the watcher before it.
        let p = peer(&broker, secure.path(), user);
        let marker = format!("marker {user}");
        p.publish(allowed, marker.clone(), 1, false);
        loop {
            let m = admin.recv(DEADLINE);
            let done = m.topic() == *allowed && m.payload_str() == marker;
            seen.push(m);
            if done {
                break;
            }
        }
        p.client.disconnect(None).unwrap();
    }
    seen.extend(admin.drain(Duration::from_millis(300)));
    let leaked: Vec<String> = seen
        .iter()
        .filter(|m| m.payload_str().starts_with("denied"))
        .map(|m| format!("{} {}", m.topic(), m.payload_str()))
        .collect();
    assert!(leaked.is_empty(), "the ACL let these through: {leaked:?}");
}
