//! The simulated LED: `brightness <N>` lines on stdout (or any writer).

use std::io::Write;

use anyhow::Context;

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

    /// Prints `brightness <level>`.
    pub fn set(&mut self, level: u8) -> anyhow::Result<()> {
        writeln!(self.out, "brightness {level}")
            .and_then(|()| self.out.flush())
            .context("cannot write to stdout")
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
