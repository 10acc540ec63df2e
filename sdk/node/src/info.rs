//! Plain records returned to JS: `SandboxInfo` and timestamps as ms since the epoch.

use moat_runtime::store::state::SandboxState;
use napi_derive::napi;

/// One sandbox as `Sandbox.list` reports it.
#[napi(object)]
pub struct SandboxInfo {
    /// Name.
    pub name: String,
    /// `"running"`, `"draining"`, `"stopped"` or `"crashed"`.
    pub status: String,
    /// The configuration it was created with, as JSON.
    pub config_json: String,
    /// Creation time, ms since the epoch.
    pub created_at: Option<f64>,
    /// Last state change (stopped, else started, else created), ms since the epoch.
    pub updated_at: Option<f64>,
}

impl SandboxInfo {
    pub(crate) fn of(state: &SandboxState) -> SandboxInfo {
        let updated =
            state.stopped_at.as_ref().or(state.started_at.as_ref()).unwrap_or(&state.created_at);
        SandboxInfo {
            name: state.name.clone(),
            status: state.status.as_str().to_owned(),
            config_json: serde_json::to_string(&state.spec).unwrap_or_default(),
            created_at: timestamp_ms(&state.created_at),
            updated_at: timestamp_ms(updated),
        }
    }
}

/// `2026-04-30T20:32:59.688Z` (the state file's format) as ms since the epoch.
pub(crate) fn timestamp_ms(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some((secs * 1000 + milli) as f64)
}

/// Howard Hinnant's days-from-civil: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
