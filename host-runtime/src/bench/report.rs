//! What one `moat bench` run reports: each figure with the floor it is compared with, the ratio
//! to that floor, and the goal issue 15 states for it, as a table or one JSON object.
//!
//! It owns the arithmetic of ratios and goals; it measures nothing. The table's layout (made-up
//! values):
//!
//! ```text
//!  figure                        value      floor      ratio  goal              met
//!  exec_roundtrip_p50_ms         1.100      0.700      1.571  <= 1.3x floor     NO
//!  fs_write_mib_s                2000       4000       0.500  >= 50% of floor   yes
//! ```

/// What a figure is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// figure ÷ floor at most this (a latency).
    RatioAtMost(f64),
    /// figure ÷ floor at least this (a throughput, as a share of the floor).
    RatioAtLeast(f64),
    /// The figure itself at most this, in its own unit.
    AtMost(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::RatioAtMost(bound) => format!("<= {bound}x floor"),
            Goal::RatioAtLeast(bound) => format!(">= {:.0}% of floor", bound * 100.0),
            Goal::AtMost(bound) => format!("<= {bound}"),
        }
    }
}

/// The floor a figure is compared with, measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    /// The floor's value, in the figure's unit.
    pub value: f64,
    /// The JSON key the ratio figure ÷ floor is reported under.
    pub ratio_key: &'static str,
}

/// One figure of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The JSON key: the figure and its unit.
    pub key: &'static str,
    /// Its value.
    pub value: f64,
    /// The floor it is compared with, if any.
    pub floor: Option<Floor>,
    /// Its goal, if the project states one.
    pub goal: Option<Goal>,
}

impl Figure {
    /// figure ÷ floor: 1.0 is "at the floor"; above 1 a latency is slower than its floor, below
    /// 1 a throughput is the share of its floor it reaches.
    pub fn ratio(&self) -> Option<f64> {
        self.floor.map(|floor| self.value / floor.value.max(1e-12))
    }

    /// Whether the goal is met (`None` without a goal, or a ratio goal without a floor).
    pub fn met(&self) -> Option<bool> {
        match self.goal? {
            Goal::RatioAtMost(bound) => self.ratio().map(|ratio| ratio <= bound),
            Goal::RatioAtLeast(bound) => self.ratio().map(|ratio| ratio >= bound),
            Goal::AtMost(bound) => Some(self.value <= bound),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// When it ran (RFC 3339 UTC).
    pub date: String,
    /// Online CPUs.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The 1-minute load average at the start and at the end of the run.
    pub load: (f64, f64),
    /// The backend the sandboxes ran on.
    pub backend: &'static str,
    /// `full` or `quick`.
    pub mode: &'static str,
    /// The figures and floors, in table order.
    pub figures: Vec<Figure>,
}

impl Report {
    /// One JSON object: metadata, one number per figure and per ratio, and `goal_met`
    /// (figure key → whether its goal was met).
    pub fn to_json(&self) -> String {
        let mut object = serde_json::Map::new();
        object.insert("date".into(), self.date.clone().into());
        object.insert("machine_cores".into(), self.cores.into());
        object.insert("machine_kernel".into(), self.kernel.clone().into());
        object.insert("load_average_1m_start".into(), number(self.load.0));
        object.insert("load_average_1m_end".into(), number(self.load.1));
        object.insert("backend".into(), self.backend.into());
        object.insert("mode".into(), self.mode.into());
        let mut met = serde_json::Map::new();
        for figure in &self.figures {
            object.insert(figure.key.into(), number(figure.value));
            if let (Some(floor), Some(ratio)) = (figure.floor, figure.ratio()) {
                object.insert(floor.ratio_key.into(), number(ratio));
            }
            if let Some(ok) = figure.met() {
                met.insert(figure.key.into(), ok.into());
            }
        }
        object.insert("goal_met".into(), met.into());
        serde_json::to_string_pretty(&object).unwrap_or_default()
    }

    /// A plain-text table: value, floor, ratio, goal and whether it is met.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "moat bench ({}) {}  cores {}  kernel {}  backend {}  load average {:.2} -> {:.2}\n\n\
             {:<30} {:>12} {:>12} {:>8}  {:<18} {}\n",
            self.mode,
            self.date,
            self.cores,
            self.kernel,
            self.backend,
            self.load.0,
            self.load.1,
            "figure",
            "value",
            "floor",
            "ratio",
            "goal",
            "met"
        );
        for figure in &self.figures {
            let floor = figure.floor.map_or(String::new(), |f| format!("{:.3}", f.value));
            let ratio = figure.ratio().map_or(String::new(), |r| format!("{r:.3}"));
            let goal = figure.goal.map_or(String::new(), Goal::text);
            let met = match figure.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            out.push_str(&format!(
                "{:<30} {:>12.3} {floor:>12} {ratio:>8}  {goal:<18} {met}\n",
                figure.key, figure.value
            ));
        }
        out
    }
}

fn number(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(value: f64, floor: f64, goal: Goal) -> Figure {
        Figure {
            key: "x",
            value,
            floor: Some(Floor { value: floor, ratio_key: "x_r" }),
            goal: Some(goal),
        }
    }

    #[test]
    fn latency_goal_is_met_at_or_under_the_bound() {
        assert_eq!(figure(1.3, 1.0, Goal::RatioAtMost(1.3)).met(), Some(true));
        assert_eq!(figure(1.4, 1.0, Goal::RatioAtMost(1.3)).met(), Some(false));
    }

    #[test]
    fn throughput_goal_is_a_share_of_the_floor() {
        assert_eq!(figure(500.0, 1000.0, Goal::RatioAtLeast(0.5)).met(), Some(true));
        assert_eq!(figure(400.0, 1000.0, Goal::RatioAtLeast(0.5)).met(), Some(false));
    }

    #[test]
    fn json_has_every_figure_ratio_goal_and_the_machine() {
        let report = Report {
            date: "2026-12-06T00:00:00.000Z".into(),
            cores: 2,
            kernel: "6.1".into(),
            load: (1.5, 2.5),
            backend: "namespace",
            mode: "quick",
            figures: vec![
                Figure {
                    key: "ping_p50_us",
                    value: 12.5,
                    floor: Some(Floor { value: 10.0, ratio_key: "ping_p50_floor_ratio" }),
                    goal: Some(Goal::RatioAtMost(2.0)),
                },
                Figure {
                    key: "idle_rss_mib",
                    value: 11.0,
                    floor: None,
                    goal: Some(Goal::AtMost(10.0)),
                },
            ],
        };
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value["ping_p50_us"], 12.5);
        assert_eq!(value["ping_p50_floor_ratio"], 1.25);
        assert_eq!(value["goal_met"]["ping_p50_us"], true);
        assert_eq!(value["goal_met"]["idle_rss_mib"], false);
        assert_eq!(value["load_average_1m_end"], 2.5);
        assert_eq!(value["machine_cores"], 2);
        assert_eq!(value["backend"], "namespace");
        let table = report.to_table();
        assert!(table.contains("ping_p50_us") && table.contains("<= 2x floor"), "{table}");
    }
}
