//! The only module that touches the GPIO (rppal), so a move to its
//! maintained fork `rpi-pal`, which has the same API, is a one-file change.
//!
//! BCM 12/18 and 13/19 have hardware PWM channels (when the `pwm` overlay is
//! enabled); every other pin, the book's 21 included, gets rppal's software
//! PWM, like gpiozero's PWMLED.

use anyhow::{anyhow, Context};
use log::{info, warn};
use rppal::gpio::{Gpio, OutputPin};
use rppal::pwm::{Channel, Polarity, Pwm};

/// gpiozero's PWMLED default: fast enough not to flicker.
pub const FREQUENCY_HZ: f64 = 100.0;

/// The hardware PWM channel wired to a BCM pin, if any.
pub fn hardware_channel(bcm: u8) -> Option<Channel> {
    match bcm {
        12 | 18 => Some(Channel::Pwm0),
        13 | 19 => Some(Channel::Pwm1),
        _ => None,
    }
}

/// Brightness 0..100 as a PWM duty cycle 0.0..1.0.
pub fn duty(level: u8) -> f64 {
    f64::from(level.min(100)) / 100.0
}

#[derive(Debug)]
enum Output {
    Hardware(Pwm),
    Software(OutputPin),
}

/// A PWM LED on a GPIO pin; the pin is released (reset to input) on drop.
#[derive(Debug)]
pub struct GpioLed {
    pin: u8,
    out: Output,
}

impl GpioLed {
    /// Opens `bcm` for PWM; the error says why the GPIO is unusable and what
    /// to do instead.
    pub fn open(bcm: u8) -> anyhow::Result<GpioLed> {
        let gpio = Gpio::new().map_err(|e| {
            anyhow!(
                "no usable Raspberry Pi GPIO ({e}): run on a Pi, as a user in the gpio group, \
                 or use --led sim"
            )
        })?;
        if let Some(channel) = hardware_channel(bcm) {
            match Pwm::with_frequency(channel, FREQUENCY_HZ, 0.0, Polarity::Normal, true) {
                Ok(pwm) => {
                    info!("LED on BCM {bcm}: hardware PWM {channel:?}");
                    return Ok(GpioLed {
                        pin: bcm,
                        out: Output::Hardware(pwm),
                    });
                }
                Err(e) => warn!(
                    "hardware PWM on BCM {bcm} unavailable ({e}; enable dtoverlay=pwm-2chan): \
                     using software PWM"
                ),
            }
        }
        let pin = gpio
            .get(bcm)
            .with_context(|| format!("cannot use GPIO BCM {bcm} (is it in use?)"))?
            .into_output_low();
        info!("LED on BCM {bcm}: software PWM at {FREQUENCY_HZ} Hz");
        Ok(GpioLed {
            pin: bcm,
            out: Output::Software(pin),
        })
    }
}

impl GpioLed {
    /// Sets the PWM duty cycle for brightness `level` (0..100).
    pub fn set(&mut self, level: u8) -> anyhow::Result<()> {
        let d = duty(level);
        match &mut self.out {
            Output::Hardware(pwm) => pwm.set_duty_cycle(d)?,
            Output::Software(pin) if level == 0 => {
                pin.clear_pwm()?;
                pin.set_low();
            }
            Output::Software(pin) => pin.set_pwm_frequency(FREQUENCY_HZ, d)?,
        }
        info!("LED on BCM {} at brightness {level}", self.pin);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pwm_pins_get_hardware_channels() {
        assert_eq!(hardware_channel(18), Some(Channel::Pwm0));
        assert_eq!(hardware_channel(19), Some(Channel::Pwm1));
        assert_eq!(
            hardware_channel(21),
            None,
            "the book's pin has no PWM channel"
        );
    }

    #[test]
    fn levels_map_to_duty_cycles() {
        assert_eq!(duty(0), 0.0);
        assert_eq!(duty(50), 0.5);
        assert_eq!(duty(100), 1.0);
        assert_eq!(duty(200), 1.0);
    }
}
