//! will-demo's logic, kept out of `main.rs` so the tests and the exercises
//! walkthrough drive the same code a user runs.
//!
//! The book demonstrates the will with
//! `mosquitto_sub -t pyiot --will-topic pyiot --will-payload 'Good Bye'
//! --will-qos 2 --will-retain` and Ctrl+C. Since Mosquitto 2.0 the clients
//! disconnect cleanly on Ctrl+C, which cancels the will; this program keeps
//! the book's behaviour by ending the process without a DISCONNECT.

use std::io::Write;

use clap::{ArgAction, Parser};
use log::{info, warn};

use pimqtt::payload::{self, BadPayload};
use pimqtt::topics::{self, BadTopic};
use pimqtt::{CommonArgs, Delivery, Event, Inbox, Next, Session, SessionConfig, Will};

/// Shown after the flags in `--help`: the book's exercise with this program.
const EXAMPLE: &str = "\
The book's exercise, in three terminals:
  Terminal #2:  mosquitto_sub -v -t 'pyiot'        # watches the topic
  Terminal #1:  will-demo --will-retain            # then press Ctrl+C here
  Terminal #2 prints 'pyiot Good Bye'; a later 'mosquitto_sub -v -t pyiot'
  still gets it (retained). Clear it with: mosquitto_pub -r -n -t 'pyiot'
Ctrl+C exits at once without DISCONNECT (exit code 0), which is what makes
the broker publish the will; --graceful and -C N disconnect cleanly instead.";

/// `-c` in will-demo's `--help`.
const DURABLE_HELP: &str = "Ask for a durable session, as mosquitto_sub -c: the broker keeps the \
subscription and queues messages for this client id while it is away. Without it the session is \
clean, as mosquitto_sub's (so a will left from an earlier run is not delivered at start)";

/// Subscribes to a topic and prints each message, with a last will that the
/// broker publishes when this program vanishes without saying goodbye: the
/// book's "Saying goodbye with a Will" exercise.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "will-demo",
    version,
    disable_help_flag = true,
    disable_version_flag = true,
    after_help = EXAMPLE,
    // As mosquitto_sub: a clean session unless -c asks for a durable one
    // (SPEC, will-demo). The shared flags keep -c as a hidden no-op and
    // --clean as the switch; here -c is the switch and --clean the default.
    mut_arg("durable", |a| a.hide(false).help(DURABLE_HELP)),
    mut_arg("clean", |a| a.hide(true).conflicts_with("durable")),
)]
pub struct Args {
    /// Topic filter to subscribe to (wildcards allowed), as mosquitto_sub -t.
    #[arg(short = 't', long, default_value = "pyiot")]
    pub topic: String,

    /// Topic of the last will [default: the -t topic].
    #[arg(long, value_name = "TOPIC")]
    pub will_topic: Option<String>,

    /// Text the broker publishes on the will topic when we vanish.
    #[arg(long, value_name = "TEXT", default_value = "Good Bye")]
    pub will_payload: String,

    /// QoS of the will message (0, 1 or 2).
    #[arg(long, value_name = "QOS", default_value_t = 2, value_parser = clap::value_parser!(i32).range(0..=2))]
    pub will_qos: i32,

    /// Make the will the topic's retained message, so subscribers that come
    /// later still learn that we are gone.
    #[arg(long)]
    pub will_retain: bool,

    /// Print `<topic> <payload>` instead of the payload alone.
    #[arg(short = 'v', long, action = ArgAction::SetTrue)]
    pub verbose: bool,

    /// Disconnect cleanly (no will) and exit 0 after N messages.
    #[arg(short = 'C', long = "count", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Make Ctrl+C and SIGTERM disconnect cleanly (no will) instead of
    /// dropping the connection.
    #[arg(long)]
    pub graceful: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// The first Ctrl+C / SIGTERM without `--graceful`: end the process at
/// once, so the socket closes without a DISCONNECT packet and the broker
/// publishes the will, as the book shows.
pub fn drop_connection() {
    info!(
        "interrupted: dropping the connection without DISCONNECT, so the broker publishes the will"
    );
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

/// Why a topic filter (`filter`) or will topic cannot be used; checked
/// before connecting because Paho would only fail later, and quietly. The
/// rules are [`topics::check_filter`] and [`topics::check_name`].
pub fn check_topic(flag: &str, topic: &str, filter: bool) -> anyhow::Result<()> {
    let checked = if filter {
        topics::check_filter(topic)
    } else {
        topics::check_name(topic)
    };
    checked.map_err(|e| match e {
        BadTopic::Wildcard(_) => anyhow::anyhow!("{flag} {e}: give --will-topic without wildcards"),
        _ => anyhow::anyhow!("{flag} {e}"),
    })
}

/// The broker flags with will-demo's session choice: clean unless `-c`.
pub fn session_args(args: &Args) -> CommonArgs {
    let mut common = args.common.clone();
    common.clean = !args.common.durable;
    common
}

/// The will these flags ask for.
pub fn will(args: &Args) -> anyhow::Result<Will> {
    let topic = args
        .will_topic
        .clone()
        .unwrap_or_else(|| args.topic.clone());
    let flag = if args.will_topic.is_some() {
        "--will-topic"
    } else {
        "-t (the default will topic)"
    };
    check_topic(flag, &topic, false)?;
    Ok(Will {
        topic,
        payload: args.will_payload.clone().into_bytes(),
        qos: args.will_qos,
        retained: args.will_retain,
    })
}

/// One received message as a line of output, or why it is skipped.
pub fn line(topic: &str, bytes: &[u8], verbose: bool) -> Result<String, BadPayload> {
    let text = match payload::text(bytes) {
        Ok(text) => text,
        // An empty message is how a retained message is cleared: show it.
        Err(BadPayload::Empty) => "",
        Err(e) => return Err(e),
    };
    Ok(if verbose {
        format!("{topic} {text}")
    } else {
        text.to_string()
    })
}

/// Connects with the will, prints what arrives on `-t` until `-C N`
/// messages have been printed or a graceful stop is requested, then
/// disconnects cleanly (which cancels the will).
pub fn run(args: &Args, inbox: &Inbox) -> anyhow::Result<()> {
    check_topic("-t", &args.topic, true)?;
    let will = will(args)?;
    info!(
        "will: {:?} on {} (QoS {}, {}retained)",
        args.will_payload,
        will.topic,
        will.qos,
        if will.retained { "" } else { "not " }
    );
    let common = session_args(args);
    info!(
        "{} session{}",
        if common.clean { "clean" } else { "durable" },
        if common.clean {
            " (as mosquitto_sub; -c asks for a durable one)"
        } else {
            " (-c): messages are queued for this client id while it is away"
        }
    );
    let session = Session::new(
        &common,
        SessionConfig {
            default_client_id: "will-demo".into(),
            status_topic: None,
            subscriptions: vec![args.topic.clone()],
            will: Some(will),
            tag: 0,
        },
        inbox,
    )?;
    session.start();

    let mut printer = Printer {
        printed: 0,
        verbose: args.verbose,
        count: args.count,
        out: std::io::stdout(),
    };
    let result = loop {
        match inbox.next(None) {
            Next::Event(Event::Message(d)) => {
                if printer.print(&d) {
                    break Ok(());
                }
            }
            Next::Event(Event::Failed { error, .. }) => break Err(error.into()),
            Next::Event(_) | Next::Timeout => {}
            Next::Stopped => break Ok(()),
        }
    };
    session.close(inbox, |d| {
        printer.print(&d);
    });
    result
}

/// Prints what arrives, counting towards `-C`.
struct Printer {
    printed: u64,
    verbose: bool,
    count: Option<u64>,
    out: std::io::Stdout,
}

impl Printer {
    /// Prints one message; true when the demo is done (`-C` reached, or
    /// stdout closed: `| head` ends the demo like -C does).
    fn print(&mut self, d: &Delivery) -> bool {
        if self.count.is_some_and(|n| self.printed >= n) {
            // Arrived while disconnecting after -C: mosquitto_sub -C does
            // not print those either.
            return true;
        }
        match line(d.topic(), d.payload(), self.verbose) {
            Ok(text) => {
                if writeln!(self.out, "{text}")
                    .and_then(|()| self.out.flush())
                    .is_err()
                {
                    return true;
                }
                self.printed += 1;
                if self.count.is_some_and(|n| self.printed == n) {
                    info!(
                        "{} message(s) received: disconnecting cleanly (no will)",
                        self.printed
                    );
                    return true;
                }
                false
            }
            Err(e) => {
                warn!(
                    "{}: {e}: {}; not printed",
                    d.topic(),
                    payload::quote(d.payload())
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut all = vec!["will-demo"];
        all.extend_from_slice(args);
        Args::try_parse_from(all).expect("valid flags")
    }

    #[test]
    fn defaults_mirror_the_book() {
        let a = parse(&[]);
        let w = will(&a).expect("default will");
        assert_eq!(a.topic, "pyiot");
        assert_eq!(w.topic, "pyiot");
        assert_eq!(w.payload, b"Good Bye");
        assert_eq!(w.qos, 2);
        assert!(!w.retained);
        assert!(!a.graceful && a.count.is_none());
        assert!(session_args(&a).clean, "a clean session, as mosquitto_sub");
    }

    #[test]
    fn dash_c_asks_for_a_durable_session() {
        assert!(!session_args(&parse(&["-c"])).clean);
        assert!(session_args(&parse(&["--clean"])).clean);
        let mut all = vec!["will-demo", "-c", "--clean"];
        assert!(
            Args::try_parse_from(all.drain(..)).is_err(),
            "-c with --clean"
        );
    }

    #[test]
    fn help_lists_own_flags_first_and_c_as_durable() {
        let help = <Args as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        let own = help.find("--will-payload").expect("--will-payload in help");
        let host = help.find("--host").expect("--host in help");
        assert!(own < host, "own flags before the broker flags:\n{help}");
        assert!(help.contains("-c\n") || help.contains("-c "), "{help}");
        assert!(
            help.contains("durable session, as mosquitto_sub -c"),
            "{help}"
        );
        assert!(
            !help.contains("--clean"),
            "--clean is the default here: {help}"
        );
    }

    #[test]
    fn will_flags() {
        let a = parse(&[
            "-t",
            "a/#",
            "--will-topic",
            "a/status",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
            "-C",
            "2",
            "-v",
        ]);
        let w = will(&a).expect("valid will");
        assert_eq!(
            (w.topic.as_str(), w.payload.as_slice(), w.qos, w.retained),
            ("a/status", &b"gone"[..], 1, true)
        );
        assert_eq!(a.count, Some(2));
        assert!(a.verbose);
    }

    #[test]
    fn wildcard_topic_needs_a_will_topic() {
        let a = parse(&["-t", "a/#"]);
        assert!(will(&a).is_err());
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [&["--will-qos", "3"][..], &["-C", "0"], &["-C", "x"]] {
            let mut all = vec!["will-demo"];
            all.extend_from_slice(bad);
            assert!(Args::try_parse_from(all).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_filters() {
        for ok in ["pyiot", "#", "level1/#", "+/+/lighting/sensor1", "a//b"] {
            assert!(check_topic("-t", ok, true).is_ok(), "{ok}");
        }
        for bad in ["", "#/sensor1", "a/b#", "a+/b", "a/#/b"] {
            assert!(check_topic("-t", bad, true).is_err(), "{bad}");
        }
        assert!(check_topic("--will-topic", "a/+", false).is_err());
    }

    #[test]
    fn output_lines() {
        assert_eq!(line("pyiot", b"hello", false), Ok("hello".into()));
        assert_eq!(line("pyiot", b"hello", true), Ok("pyiot hello".into()));
        assert_eq!(line("pyiot", b"", true), Ok("pyiot ".into()));
        assert_eq!(
            line("pyiot", &[0xff, 0xfe], false),
            Err(BadPayload::NotUtf8)
        );
        assert!(line("pyiot", &vec![b'x'; pimqtt::MAX_PAYLOAD + 1], false).is_err());
    }
}
