//! The job's GPU visibility variables, for adopted logins.
//!
//! The Prolog's environment names the GPUs slurmd gave the job on this
//! node, by host index (`CUDA_VISIBLE_DEVICES=1,3`). The hooks' Prolog
//! writes them to a root-owned record (`users/<uid>/devices/<job>` under
//! the state directory); the module's session phase reads the record of
//! the job it adopted into and exports the values the job's own tasks
//! see. Under `ConstrainDevices=yes` a task's device cgroup leaves it only
//! the job's GPUs, which CUDA, ROCm and Level Zero then number from 0, and
//! Slurm sets the task's visibility variables to those numbers
//! (`0,1`); `SLURM_JOB_GPUS` keeps the host indices. Without it, tasks get
//! the host indices.
//!
//! Only the names of [`DEVICE_VARS`] are ever written or exported, and a
//! value is a comma-separated list of small decimal numbers or nothing is
//! exported for that name: no value can carry a newline, a second
//! assignment or another variable.

/// The names that may travel, in the order they are exported.
pub const DEVICE_VARS: [&str; 5] = [
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
    "GPU_DEVICE_ORDINAL",
    "SLURM_JOB_GPUS",
];

/// More GPUs than any node has: a longer list is not Slurm's.
const MAX_DEVICES: usize = 256;
/// Digits in one index.
const MAX_DIGITS: usize = 5;

/// Whether `value` is a list of device indices as Slurm writes them.
pub fn valid_value(value: &str) -> bool {
    let mut count = 0;
    for item in value.split(',') {
        count += 1;
        if item.is_empty()
            || item.len() > MAX_DIGITS
            || !item.bytes().all(|b| b.is_ascii_digit())
            || count > MAX_DEVICES
        {
            return false;
        }
    }
    true
}

/// The record the Prolog writes: one `NAME=VALUE` line per allow-listed
/// name that `get` has with a valid value. Empty when the job has no GPU
/// here.
pub fn record_text(get: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    for name in DEVICE_VARS {
        if let Some(value) = get(name).filter(|v| valid_value(v)) {
            out.push_str(name);
            out.push('=');
            out.push_str(&value);
            out.push('\n');
        }
    }
    out
}

/// What a record holds: the allow-listed names with valid values, each
/// once (the first wins), and a note for every line that was not taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRecord {
    pub vars: Vec<(&'static str, String)>,
    pub rejected: Vec<String>,
}

pub fn parse_record(text: &str) -> DeviceRecord {
    let mut record = DeviceRecord::default();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            record
                .rejected
                .push(format!("line {}: no NAME=VALUE", n + 1));
            continue;
        };
        let Some(known) = DEVICE_VARS.iter().copied().find(|v| *v == name) else {
            record
                .rejected
                .push(format!("line {}: {:?} is not an allowed name", n + 1, name));
            continue;
        };
        if !valid_value(value) {
            record
                .rejected
                .push(format!("line {}: {known} has an invalid value", n + 1));
            continue;
        }
        if record.vars.iter().any(|(k, _)| *k == known) {
            record
                .rejected
                .push(format!("line {}: {known} given twice", n + 1));
            continue;
        }
        record.vars.push((known, value.to_owned()));
    }
    record
}

/// The values a task of the job sees: with `constrain_devices`, each
/// visibility list renumbered 0..n-1; `SLURM_JOB_GPUS` as recorded.
pub fn session_values(
    record: &DeviceRecord,
    constrain_devices: bool,
) -> Vec<(&'static str, String)> {
    record
        .vars
        .iter()
        .map(|(name, value)| {
            if !constrain_devices || *name == "SLURM_JOB_GPUS" {
                return (*name, value.clone());
            }
            let n = value.split(',').count();
            let renumbered: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            (*name, renumbered.join(","))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_prolog_records_only_allowed_names_with_index_lists() {
        let text = record_text(env(&[
            ("CUDA_VISIBLE_DEVICES", "1,3"),
            ("SLURM_JOB_GPUS", "1,3"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("ROCR_VISIBLE_DEVICES", "1\nLD_PRELOAD=/tmp/evil.so"),
            ("ZE_AFFINITY_MASK", "1 3"),
            ("GPU_DEVICE_ORDINAL", ""),
        ]));
        assert_eq!(text, "CUDA_VISIBLE_DEVICES=1,3\nSLURM_JOB_GPUS=1,3\n");
        assert_eq!(record_text(env(&[])), "");
    }

    #[test]
    fn a_hostile_record_exports_nothing_but_allowed_valid_names() {
        let text = "CUDA_VISIBLE_DEVICES=2\nLD_PRELOAD=/tmp/x.so\nPATH=/tmp\n\
                    ROCR_VISIBLE_DEVICES=2;rm\nCUDA_VISIBLE_DEVICES=0\ngarbage\n\
                    ZE_AFFINITY_MASK=2=3\nSLURM_JOB_GPUS=2\x00\nGPU_DEVICE_ORDINAL=2\r\n";
        let r = parse_record(text);
        // A CRLF line end is only a line end.
        assert_eq!(
            r.vars,
            vec![
                ("CUDA_VISIBLE_DEVICES", "2".to_owned()),
                ("GPU_DEVICE_ORDINAL", "2".to_owned())
            ]
        );
        assert_eq!(r.rejected.len(), 7, "{:?}", r.rejected);
        for (name, value) in session_values(&r, true) {
            assert!(DEVICE_VARS.contains(&name));
            assert!(valid_value(&value), "{value:?}");
        }
    }

    #[test]
    fn constrained_tasks_count_from_zero_and_job_gpus_stays_on_host_numbers() {
        let r =
            parse_record("CUDA_VISIBLE_DEVICES=1,3\nZE_AFFINITY_MASK=1,3\nSLURM_JOB_GPUS=1,3\n");
        assert_eq!(
            session_values(&r, true),
            vec![
                ("CUDA_VISIBLE_DEVICES", "0,1".to_owned()),
                ("ZE_AFFINITY_MASK", "0,1".to_owned()),
                ("SLURM_JOB_GPUS", "1,3".to_owned()),
            ]
        );
        assert_eq!(session_values(&r, false), r.vars);
    }

    #[test]
    fn index_lists_are_bounded() {
        assert!(valid_value("0"));
        assert!(valid_value("0,1,15"));
        for bad in ["", ",", "1,", "a", "123456", "-1", "1 2", "0x1"] {
            assert!(!valid_value(bad), "{bad:?}");
        }
        let long = vec!["1"; MAX_DEVICES + 1].join(",");
        assert!(!valid_value(&long));
    }
}
