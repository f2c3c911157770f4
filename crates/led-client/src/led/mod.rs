//! The LED outputs: the Pi's GPIO ([`gpio`]), or a simulated LED on stdout
//! ([`sim`]). The two outputs know nothing of this module: each has an
//! inherent `set`, and the [`Led`] impls here forward to it, so the
//! dependency goes one way (`led` uses `gpio` and `sim`, never back).

use log::info;

pub mod gpio;
pub mod sim;

pub use gpio::GpioLed;
pub use sim::SimLed;

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

/// Opens the output `--led` asks for. `auto` falls back to the simulated LED
/// when there is no GPIO; `gpio` without one is a configuration error.
pub fn open(kind: LedKind, pin: u8) -> anyhow::Result<Box<dyn Led>> {
    let sim = || -> Box<dyn Led> { Box::new(SimLed::new(std::io::stdout())) };
    match kind {
        LedKind::Sim => Ok(sim()),
        LedKind::Gpio => Ok(Box::new(GpioLed::open(pin)?)),
        LedKind::Auto => match GpioLed::open(pin) {
            Ok(led) => Ok(Box::new(led)),
            Err(e) => {
                info!("{e:#}; using the simulated LED (brightness lines on stdout)");
                Ok(sim())
            }
        },
    }
}

impl<W: std::io::Write> Led for SimLed<W> {
    fn set(&mut self, level: u8) -> anyhow::Result<()> {
        SimLed::set(self, level)
    }
}

impl Led for GpioLed {
    fn set(&mut self, level: u8) -> anyhow::Result<()> {
        GpioLed::set(self, level)
    }
}
