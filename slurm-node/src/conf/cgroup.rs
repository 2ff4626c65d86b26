//! cgroup.conf: the cgroup plugin, its mount point and what it constrains.

use std::path::{Path, PathBuf};

use super::error::ConfError;
use super::lexer::{At, Reader, Sink, read_text};
use super::provenance::Provenance;
use super::values::{none_if_empty, parse_bool, trailing_text};

pub const DEFAULT_CGROUP_MOUNTPOINT: &str = "/sys/fs/cgroup";

/// The parts of cgroup.conf the node-side tools look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConf {
    /// The file read, or `None` when there was none and these are defaults.
    pub path: Option<PathBuf>,
    /// CgroupPlugin as written (`cgroup/v1`, `cgroup/v2`, `autodetect`).
    pub plugin: Option<String>,
    /// CgroupMountpoint without a trailing slash.
    pub mountpoint: PathBuf,
    /// CgroupSlice (25.11 and later); `None` means `system.slice`.
    pub slice: Option<String>,
    pub constrain_cores: bool,
    pub constrain_ram_space: bool,
    pub constrain_swap_space: bool,
    pub constrain_devices: bool,
    pub ignore_systemd: bool,
    /// CgroupJobIdPaths: 26.05 names job cgroups by SLUID unless this is set.
    pub job_id_paths: bool,
    /// The file and line of each setting.
    pub provenance: Provenance,
}

impl Default for CgroupConf {
    fn default() -> Self {
        CgroupConf {
            path: None,
            plugin: None,
            mountpoint: PathBuf::from(DEFAULT_CGROUP_MOUNTPOINT),
            slice: None,
            constrain_cores: false,
            constrain_ram_space: false,
            constrain_swap_space: false,
            constrain_devices: false,
            ignore_systemd: false,
            job_id_paths: false,
            provenance: Provenance::default(),
        }
    }
}

impl CgroupConf {
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        let text = read_text(path).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfError> {
        let mut sink = CgroupSink {
            conf: CgroupConf {
                path: Some(path.to_owned()),
                ..CgroupConf::default()
            },
        };
        let provenance = Reader::run(text, path, &mut sink)?;
        Ok(CgroupConf {
            provenance,
            ..sink.conf
        })
    }
}

struct CgroupSink {
    conf: CgroupConf,
}

impl Sink for CgroupSink {
    fn entry(&mut self, at: At<'_>, key: &str, value: &str, rest: &str) -> Result<(), ConfError> {
        let c = &mut self.conf;
        match key.to_ascii_lowercase().as_str() {
            "cgroupplugin" => c.plugin = none_if_empty(value),
            "cgroupmountpoint" => {
                // Slurm drops one trailing slash; "/" itself stays.
                let trimmed = match value.strip_suffix('/') {
                    Some(t) if !t.is_empty() => t,
                    _ => value,
                };
                c.mountpoint = PathBuf::from(trimmed);
            }
            "cgroupslice" => c.slice = none_if_empty(value),
            "constraincores" => c.constrain_cores = parse_bool(at, key, value)?,
            "constrainramspace" => c.constrain_ram_space = parse_bool(at, key, value)?,
            "constrainswapspace" => c.constrain_swap_space = parse_bool(at, key, value)?,
            "constraindevices" => c.constrain_devices = parse_bool(at, key, value)?,
            "ignoresystemd" => c.ignore_systemd = parse_bool(at, key, value)?,
            "cgroupjobidpaths" => c.job_id_paths = parse_bool(at, key, value)?,
            _ => return Ok(()),
        }
        trailing_text(at, key, value, rest)
    }

    fn cluster_name(&self) -> Option<&str> {
        None
    }
}
