//! Checks a cron schedule field by field (the CRD's regex only checks its shape).
//! Accepts what Kubernetes CronJobs accept: five fields with numbers, `*`, ranges, steps,
//! lists and month/day names, or an `@` macro. No I/O.

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MACROS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// `Ok` if `schedule` is a valid cron schedule; otherwise why not.
pub fn check(schedule: &str) -> Result<(), String> {
    let schedule = schedule.trim();
    if schedule.starts_with('@') {
        return if MACROS.contains(&schedule) {
            Ok(())
        } else {
            Err(format!(
                "{schedule:?} is not a cron macro ({})",
                MACROS.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "{schedule:?} has {} fields, a cron schedule has 5 (minute hour day-of-month month day-of-week)",
            fields.len()
        ));
    }
    let specs: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day of month", 1, 31, &[]),
        ("month", 1, 12, MONTHS),
        ("day of week", 0, 7, DAYS),
    ];
    for (field, (what, min, max, names)) in fields.iter().zip(specs) {
        check_field(field, min, max, names).map_err(|e| format!("{what} {field:?}: {e}"))?;
    }
    Ok(())
}

fn check_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<(), String> {
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s >= 1 && s <= max => {}
                _ => return Err(format!("step {step:?} must be 1..{max}")),
            }
        }
        if range == "*" {
            continue;
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (value(a, min, max, names)?, value(b, min, max, names)?),
            None => {
                let v = value(range, min, max, names)?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
    }
    Ok(())
}

fn value(s: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        // Month names start at 1, day names at 0.
        return Ok(i as u32 + min);
    }
    match s.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is outside {min}..{max}")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_schedules_users_write() {
        for s in [
            "0 0 * * 6",
            "0 1 * * 1-6",
            "*/15 * * * *",
            "0 2 1 JAN,JUL SUN",
            "@daily",
        ] {
            assert_eq!(check(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn rejects_out_of_range_and_malformed() {
        assert!(check("60 * * * *").unwrap_err().contains("minute"));
        assert!(check("0 24 * * *").unwrap_err().contains("hour"));
        assert!(check("0 0 0 * *").unwrap_err().contains("day of month"));
        assert!(check("0 0 * 13 *").unwrap_err().contains("month"));
        assert!(check("0 0 * * 5-2").unwrap_err().contains("backwards"));
        assert!(check("0 0 * *").unwrap_err().contains("4 fields"));
        assert!(check("@sometimes").is_err());
        assert!(check("*/0 * * * *").unwrap_err().contains("step"));
    }
}
