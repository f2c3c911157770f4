//! The lines a real sensor script writes to `tank-sensor --source stdin`:
//! a level (`63.5`) for every tank, or `<id> <level>` for one of a fleet.

/// Which tanks a line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    All,
    One(usize),
}

impl Target {
    /// The indices of the tanks it names, among `n`.
    pub fn indices(self, n: usize) -> std::ops::Range<usize> {
        match self {
            Target::All => 0..n,
            Target::One(i) => i..i + 1,
        }
    }
}

/// Parses one line; `Ok(None)` for a blank line. The error says what is
/// wrong with it.
pub fn parse_line(line: &str, ids: &[String]) -> Result<Option<(Target, f64)>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (target, number) = match words.as_slice() {
        [] => return Ok(None),
        [level] => (Target::All, *level),
        [id, level] => match ids.iter().position(|t| t == id) {
            Some(i) => (Target::One(i), *level),
            None => return Err(format!("{} is not one of this program's tanks", quote(id))),
        },
        _ => {
            return Err(format!(
                "{} is not a level (a number from 0 to 100)",
                quote(line)
            ))
        }
    };
    Ok(Some((target, level(number)?)))
}

/// A level in percent. Only plain decimal numbers count: Rust would also
/// read "NaN" and "inf", which are not levels.
fn level(word: &str) -> Result<f64, String> {
    let bad = || format!("{} is not a level (a number from 0 to 100)", quote(word));
    if !word
        .chars()
        .all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
    {
        return Err(bad());
    }
    let n: f64 = word.parse().map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("level {} is outside 0..100", quote(word)));
    }
    Ok(n)
}

/// A piece of a line as every warning quotes a payload: short, with its size.
fn quote(s: &str) -> String {
    pimqtt::payload::quote(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        vec!["1".into(), "2".into()]
    }

    #[test]
    fn levels_for_all_or_one() {
        assert_eq!(parse_line("49.5", &ids()), Ok(Some((Target::All, 49.5))));
        assert_eq!(
            parse_line("  2 100 ", &ids()),
            Ok(Some((Target::One(1), 100.0)))
        );
        assert_eq!(parse_line("", &ids()), Ok(None));
        assert_eq!(parse_line("   ", &ids()), Ok(None));
        assert_eq!(Target::All.indices(2), 0..2);
        assert_eq!(Target::One(1).indices(2), 1..2);
    }

    #[test]
    fn bad_lines_say_why() {
        for bad in ["abc", "NaN", "inf", "-1", "100.5", "3 50", "1 2 3", "1 x"] {
            assert!(parse_line(bad, &ids()).is_err(), "{bad} accepted");
        }
        let e = parse_line("9 50", &ids()).unwrap_err();
        assert!(e.contains("not one of"), "{e}");
    }
}
