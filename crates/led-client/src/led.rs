//! The LED outputs: the Pi's GPIO, or a simulated LED on stdout.

use std::io::Write;

use anyhow::Context;
use log::info;

/// Something with a brightness from 0 to 100.
pub trait Led {
    fn set(&mut self, level: u8) -> anyhow::Result<()>;
}

/// `--led`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LedKind {
    Auto,
    Gpio,
    Sim,
}

/// The simulated LED: one `brightness <N>` line per applied level, flushed
/// at once so a pipe (a test, `grep`) sees it immediately.
#[derive(Debug)]
pub struct SimLed<W: Write> {
    out: W,
}

impl<W: Write> SimLed<W> {
    pub fn new(out: W) -> Self {
        SimLed { out }
    }
}

impl<W: Write> Led for SimLed<W> {
    fn set(&mut self, level: u8) -> anyhow::Result<()> {
        writeln!(self.out, "brightness {level}")
            .and_then(|()| self.out.flush())
            .context("cannot write to stdout")
    }
}

/// Opens the output `--led` asks for. `auto` falls back to the simulated LED
/// when there is no GPIO; `gpio` without one is a configuration error.
pub fn open(kind: LedKind, pin: u8) -> anyhow::Result<Box<dyn Led>> {
    let sim = || -> Box<dyn Led> { Box::new(SimLed::new(std::io::stdout())) };
    match kind {
        LedKind::Sim => Ok(sim()),
        LedKind::Gpio => Ok(Box::new(crate::gpio::GpioLed::open(pin)?)),
        LedKind::Auto => match crate::gpio::GpioLed::open(pin) {
            Ok(led) => Ok(Box::new(led)),
            Err(e) => {
                info!("{e:#}; using the simulated LED (brightness lines on stdout)");
                Ok(sim())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_led_writes_one_line_per_level() {
        let mut buf = Vec::new();
        {
            let mut led = SimLed::new(&mut buf);
            led.set(5).expect("write to a Vec");
            led.set(5).expect("write to a Vec");
            led.set(0).expect("write to a Vec");
        }
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "brightness 5\nbrightness 5\nbrightness 0\n"
        );
    }
}
