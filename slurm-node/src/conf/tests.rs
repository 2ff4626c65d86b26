use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const DEBIAN_SLURM_CONF: &str = include_str!("../../tests/fixtures/conf/debian-slurm.conf");
const DEBIAN_CGROUP_CONF: &str = include_str!("../../tests/fixtures/conf/debian-cgroup.conf");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, text).unwrap();
    path
}

fn parse(text: &str) -> SlurmConf {
    SlurmConf::parse(text, Path::new("/etc/slurm/slurm.conf")).unwrap()
}

fn parse_err(text: &str) -> String {
    SlurmConf::parse(text, Path::new("/etc/slurm/slurm.conf"))
        .unwrap_err()
        .to_string()
}

fn node(name: &str, hostname: &str, addr: &str, port: Option<u16>) -> NodeEntry {
    NodeEntry {
        name: name.into(),
        hostname: hostname.into(),
        addr: addr.into(),
        port,
    }
}

#[test]
fn defaults_for_an_empty_file() {
    let c = parse("");
    assert_eq!(c.path, Path::new("/etc/slurm/slurm.conf"));
    assert_eq!(c.cluster_name, None);
    assert_eq!(c.slurmd_spool_dir, "/var/spool/slurmd");
    assert_eq!(c.slurmd_port, 6818);
    assert_eq!(c.slurm_user, "root");
    assert_eq!(c.slurmd_user, "root");
    assert_eq!(c.auth_type, "auth/munge");
    assert_eq!(c.message_timeout_secs, 10);
    assert_eq!(c.tcp_timeout_secs, 2);
    assert!(c.nodes.is_empty() && c.prolog_flags.is_empty());
    assert_eq!(c.cgroup, CgroupConf::default());
    assert_eq!(c.cgroup.mountpoint, Path::new("/sys/fs/cgroup"));
    let expected = SlurmConf {
        path: c.path.clone(),
        ..SlurmConf::default()
    };
    assert_eq!(c, expected);
}

#[test]
fn keys_are_case_insensitive_values_keep_case_last_wins() {
    let c = parse(
        "SLURMUSER=Slurm\nslurmdspooldir=/Var/Spool/%n\nSlurmUser=slurmA\n\
         ClusterName=MyCluster\nAuthType = auth/slurm\nAuthInfo=\"socket=/run/x y\"\n",
    );
    assert_eq!(c.slurm_user, "slurmA");
    assert_eq!(c.slurmd_spool_dir, "/Var/Spool/%n");
    assert_eq!(c.cluster_name.as_deref(), Some("mycluster"));
    assert_eq!(c.auth_type, "auth/slurm");
    assert_eq!(c.auth_info.as_deref(), Some("socket=/run/x y"));
    assert_eq!(c.raw.get("slurmuser").map(String::as_str), Some("slurmA"));
}

#[test]
fn comments_and_escaped_hash() {
    let c = parse(
        "# a comment\n   # indented comment\nSlurmUser=slurm # trailing comment\n\
         Prolog=/etc/slurm/pro\\#log.sh#real comment\nTaskProlog=/a\\\\b\n",
    );
    assert_eq!(c.slurm_user, "slurm");
    assert_eq!(c.prolog.as_deref(), Some("/etc/slurm/pro#log.sh"));
    assert_eq!(c.task_prolog.as_deref(), Some("/a\\b"));
    // An escaped backslash before '#' does not escape the '#'.
    let c = parse("SlurmUser=a\\\\#b\n");
    assert_eq!(c.slurm_user, "a\\");
}

#[test]
fn blank_lines_whitespace_and_crlf() {
    let c = parse("\n   \n\t\nSlurmUser=slurm\r\n\r\nSlurmdPort=7000\r\n");
    assert_eq!(c.slurm_user, "slurm");
    assert_eq!(c.slurmd_port, 7000);
}

#[test]
fn continuation_lines() {
    let c =
        parse("NodeName=c[1-2] \\\n   NodeHostname=h[1-2] \\   \n  Port=7001\nSlurmUser=slurm\n");
    assert_eq!(
        c.nodes,
        [
            node("c1", "h1", "h1", Some(7001)),
            node("c2", "h2", "h2", Some(7001))
        ]
    );
    assert_eq!(c.slurm_user, "slurm");
    // A comment ends a physical line before the continuation is seen.
    let c = parse("TaskProlog=/x \\ # comment\n\nSlurmUser=u\n");
    assert_eq!(c.task_prolog.as_deref(), Some("/x"));
    assert_eq!(c.slurm_user, "u");
    // An even run of backslashes is an escaped backslash, not a join.
    let c = parse("TaskProlog=/x\\\\\nSlurmUser=u\n");
    assert_eq!(c.task_prolog.as_deref(), Some("/x\\"));
    // Errors point at the first physical line of the joined line.
    assert_eq!(
        parse_err("SlurmUser=a\nSlurmdPort=\\\n abc\n"),
        "/etc/slurm/slurm.conf:2: SlurmdPort: \"abc\" is not a port number"
    );
}

#[test]
fn numbers_are_strict() {
    for bad in ["abc", "0", "70000", "6818x", "-1", "+6818", "0x", "08"] {
        assert_eq!(
            parse_err(&format!("\n\nSlurmdPort={bad}\n")),
            format!("/etc/slurm/slurm.conf:3: SlurmdPort: \"{bad}\" is not a port number")
        );
    }
    assert_eq!(
        parse_err("MessageTimeout=ten"),
        "/etc/slurm/slurm.conf:1: MessageTimeout: \"ten\" is not a number"
    );
    assert_eq!(
        parse_err("TCPTimeout=65536"),
        "/etc/slurm/slurm.conf:1: TCPTimeout: \"65536\" is more than 65535"
    );
    // strtoul(…, 0) spellings, as Slurm reads them.
    let c = parse("SlurmdPort=0x1aa4\nMessageTimeout=010\nTCPTimeout=INFINITE\n");
    assert_eq!(c.slurmd_port, 0x1aa4);
    assert_eq!(c.message_timeout_secs, 8);
    assert_eq!(c.tcp_timeout_secs, 65535);
}

#[test]
fn trailing_junk_after_a_known_key_is_an_error() {
    assert_eq!(
        parse_err("SlurmUser=slurm root\n"),
        "/etc/slurm/slurm.conf:1: SlurmUser=slurm: unexpected text after the value: \"root\""
    );
    assert_eq!(
        parse_err("\nthis is not a setting\n"),
        "/etc/slurm/slurm.conf:2: cannot parse \"this is not a setting\": expected Key=Value"
    );
    assert!(parse_err("SlurmUser=\n").contains(":1: cannot parse \"SlurmUser=\""));
}

#[test]
fn unknown_keys_and_multi_key_lines_are_skipped() {
    let c = parse(
        "SchedulerType=sched/backfill\nFutureKey=1\n\
         PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n\
         NodeSet=ns Feature=gpu\nSlurmctldHost=head(10.0.0.1)\n\
         SomeNewLine=x SlurmdPort=1\n",
    );
    assert_eq!(c.slurmd_port, 6818);
    assert_eq!(c.raw.get("futurekey").map(String::as_str), Some("1"));
    assert_eq!(
        c.raw.get("slurmctldhost").map(String::as_str),
        Some("head(10.0.0.1)")
    );
    assert!(!c.raw.contains_key("partitionname"));
}

#[test]
fn node_lines_expand_in_parallel() {
    let c = parse(
        "NodeName=c[1-4] NodeHostname=h[1-4] NodeAddr=10.0.0.[1-4] Port=6820 CPUs=2 \
         Feature=\"a b\" State=UNKNOWN\nNodeName=login\nNodeName=gpu[01-02] NodeAddr=g[1-2]\n",
    );
    assert_eq!(c.nodes.len(), 7);
    assert_eq!(c.nodes[0], node("c1", "h1", "10.0.0.1", Some(6820)));
    assert_eq!(c.nodes[3], node("c4", "h4", "10.0.0.4", Some(6820)));
    assert_eq!(c.nodes[4], node("login", "login", "login", None));
    assert_eq!(c.nodes[5], node("gpu01", "gpu01", "g1", None));
    assert_eq!(c.node("gpu02"), Some(&node("gpu02", "gpu02", "g2", None)));
    assert_eq!(c.node("nope"), None);
    assert_eq!(c.node_port(&c.nodes[0]), 6820);
    assert_eq!(c.node_port(&c.nodes[4]), 6818);
}

#[test]
fn node_defaults_apply_to_later_lines() {
    let c = parse(
        "NodeName=early\nNodeName=DEFAULT CPUs=4 Port=7000\nNodeName=a\n\
         nodename=default Sockets=2\nNodeName=b Port=7001\nNodeName=c\n",
    );
    assert_eq!(c.node("early").unwrap().port, None);
    assert_eq!(c.node("a").unwrap().port, Some(7000));
    assert_eq!(c.node("b").unwrap().port, Some(7001));
    // A later DEFAULT line keeps earlier defaults it does not override.
    assert_eq!(c.node("c").unwrap().port, Some(7000));
    assert!(c.node("DEFAULT").is_none());
    assert_eq!(
        parse_err("\nNodeName=DEFAULT NodeHostname=x\n"),
        "/etc/slurm/slurm.conf:2: NodeHostname is not allowed with NodeName=DEFAULT"
    );
    assert!(parse_err("NodeName=ALL CPUs=1").contains(":1: NodeName=ALL: ALL is reserved"));
}

#[test]
fn multiple_slurmd_shares_one_host() {
    let c = parse("NodeName=vm[1-3] NodeHostname=localhost Port=17001-17003\n");
    assert_eq!(
        c.nodes,
        [
            node("vm1", "localhost", "localhost", Some(17001)),
            node("vm2", "localhost", "localhost", Some(17002)),
            node("vm3", "localhost", "localhost", Some(17003)),
        ]
    );
    let c = parse("NodeName=x[1-2] Port=[7001,7002]\nNodeName=y Port=7\n");
    assert_eq!(c.nodes[1].port, Some(7002));
    assert_eq!(c.node("y").unwrap().port, Some(7));
}

#[test]
fn node_count_mismatch_names_file_and_line() {
    assert_eq!(
        parse_err("ClusterName=c\n\nNodeName=c[1-4] NodeAddr=10.0.0.[1-3]\n"),
        "/etc/slurm/slurm.conf:3: NodeAddr=10.0.0.[1-3] gives 3 names for the 4 nodes of \
         NodeName=c[1-4]; give one per node or a single one"
    );
    assert!(
        parse_err("NodeName=c[1-2] NodeHostname=h[1-3]")
            .starts_with("/etc/slurm/slurm.conf:1: NodeHostname=h[1-3] gives 3 names")
    );
    assert!(
        parse_err("NodeName=c[1-3] Port=[1-2]")
            .starts_with("/etc/slurm/slurm.conf:1: Port=[1-2] gives 2 ports")
    );
    assert_eq!(
        parse_err("NodeName=c1 Port=http"),
        "/etc/slurm/slurm.conf:1: Port: \"http\" is not a port number"
    );
    assert_eq!(
        parse_err("NodeName=c1 Port=0x10"),
        "/etc/slurm/slurm.conf:1: Port: \"0x10\" is not a port number"
    );
    assert!(
        parse_err("NodeName=c[1-2")
            .starts_with("/etc/slurm/slurm.conf:1: NodeName: hostlist \"c[1-2\": '[' without ']'")
    );
    assert!(
        parse_err("NodeName=c1 CPUs=2 junk").contains(":1: NodeName=c1: cannot parse \"junk\"")
    );
    assert!(parse_err("NodeName=n[1-300000]").contains("expands to more than 65536"));
}

#[test]
fn prolog_flags_and_lists() {
    let c = parse(
        "PrologFlags=X11,Serial\nTaskPlugin=task/affinity,task/cgroup\n\
         LaunchParameters=enable_nss_slurm,Ulimit_PAM_Adopt\nProctrackType=proctrack/cgroup\n",
    );
    assert_eq!(c.prolog_flags, ["x11", "serial"]);
    assert!(c.has_prolog_flag("x11"));
    assert!(c.has_prolog_flag("Contain"));
    assert!(c.has_prolog_flag("ALLOC"));
    assert!(c.has_prolog_flag("serial"));
    assert!(!c.has_prolog_flag("runinjob"));
    assert_eq!(c.task_plugin, ["task/affinity", "task/cgroup"]);
    assert_eq!(
        c.launch_parameters,
        ["enable_nss_slurm", "Ulimit_PAM_Adopt"]
    );
    assert!(c.has_launch_parameter("ulimit_pam_adopt"));
    assert_eq!(c.proctrack_type.as_deref(), Some("proctrack/cgroup"));

    let c = parse("PrologFlags=RunInJob\nTaskPlugin=task/none\n");
    assert!(c.has_prolog_flag("contain") && c.has_prolog_flag("alloc"));
    assert!(c.task_plugin.is_empty());
    let c = parse("PrologFlags=Alloc\n");
    assert!(!c.has_prolog_flag("contain"));
}

#[test]
fn prolog_and_epilog_lines_accumulate() {
    let c = parse("Prolog=/a\nProlog=/b\nEpilog=/e\n");
    assert_eq!(c.prolog.as_deref(), Some("/b"));
    assert_eq!(c.prologs, ["/a", "/b"]);
    assert_eq!(c.epilog.as_deref(), Some("/e"));
    assert_eq!(c.epilogs, ["/e"]);
}

#[test]
fn job_container_type() {
    assert_eq!(
        parse("JobContainerType=job_container/tmpfs")
            .job_container_type
            .as_deref(),
        Some("job_container/tmpfs")
    );
    assert_eq!(
        parse("JobContainerType=job_container/none").job_container_type,
        None
    );
    assert_eq!(
        parse("JobContainerType=job_container/none\nNamespaceType=namespace/tmpfs")
            .job_container_type
            .as_deref(),
        Some("namespace/tmpfs")
    );
    assert_eq!(
        parse("NamespaceType=namespace/none\nJobContainerType=job_container/tmpfs")
            .job_container_type,
        None
    );
}

#[test]
fn spool_dir_substitutes_first_n_and_h() {
    let mut c =
        parse("SlurmdSpoolDir=/var/spool/slurmd.%n/%h/%n\nNodeName=vm1 NodeHostname=host1\n");
    let n = c.node("vm1").unwrap().clone();
    assert_eq!(c.spool_dir(&n), Path::new("/var/spool/slurmd.vm1/host1/%n"));
    c.slurmd_spool_dir = "/var/lib/slurm/slurmd".into();
    assert_eq!(c.spool_dir(&n), Path::new("/var/lib/slurm/slurmd"));
}

#[test]
fn include_relative_absolute_and_case() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    write(d, "nodes.conf", "NodeName=n[1-2]\n");
    let abs = write(d, "sub/abs.conf", "SlurmUser=slurm\n");
    let main = write(
        d,
        "slurm.conf",
        &format!(
            "ClusterName=Test\nInclude nodes.conf\ninclude {}\nINCLUDE  %c-extra.conf  # c\n",
            abs.display()
        ),
    );
    write(d, "test-extra.conf", "SlurmdPort=7777\n");
    let c = SlurmConf::load(&main).unwrap();
    assert_eq!(c.nodes.len(), 2);
    assert_eq!(c.slurm_user, "slurm");
    assert_eq!(c.slurmd_port, 7777);
    // parse() resolves includes against the given path's directory too.
    let c = SlurmConf::parse("Include nodes.conf\n", &d.join("any.conf")).unwrap();
    assert_eq!(c.nodes.len(), 2);
}

#[test]
fn nested_relative_include_is_from_the_top_level_directory() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    write(d, "sub/inner.conf", "Include leaf.conf\n");
    write(d, "leaf.conf", "SlurmUser=top\n");
    write(d, "sub/leaf.conf", "SlurmUser=sub\n");
    let main = write(d, "slurm.conf", "Include sub/inner.conf\n");
    assert_eq!(SlurmConf::load(&main).unwrap().slurm_user, "top");
}

#[test]
fn include_glob_in_last_component() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    write(d, "conf.d/20-b.conf", "NodeName=b\n");
    write(d, "conf.d/10-a.conf", "NodeName=a\n");
    write(d, "conf.d/.hidden.conf", "NodeName=hidden\n");
    write(d, "conf.d/readme.txt", "not a config\n");
    write(d, "empty.d/readme.txt", "x\n");
    let main = write(
        d,
        "slurm.conf",
        "Include conf.d/*.conf\nInclude empty.d/*.conf\n",
    );
    let c = SlurmConf::load(&main).unwrap();
    let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);

    let main = write(d, "bad.conf", "\nInclude */x.conf\n");
    assert_eq!(
        SlurmConf::load(&main).unwrap_err().to_string(),
        format!(
            "{}:2: Include */x.conf: '*' is only supported in the last path component",
            main.display()
        )
    );
    let main = write(d, "nodir.conf", "Include missing.d/*.conf\n");
    assert!(matches!(
        SlurmConf::load(&main),
        Err(ConfError::Include { line: 1, .. })
    ));
}

#[test]
fn include_errors_name_file_and_line() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    let main = write(d, "slurm.conf", "SlurmUser=x\nInclude missing.conf\n");
    let err = SlurmConf::load(&main).unwrap_err();
    assert!(matches!(err, ConfError::Include { line: 2, .. }));
    assert!(
        err.to_string().starts_with(&format!(
            "{}:2: Include {}: ",
            main.display(),
            d.join("missing.conf").display()
        )),
        "{err}"
    );

    // Errors inside an included file name that file.
    let inc = write(d, "inc.conf", "\n\nSlurmdPort=abc\n");
    let main = write(d, "slurm2.conf", "Include inc.conf\n");
    assert_eq!(
        SlurmConf::load(&main).unwrap_err().to_string(),
        format!(
            "{}:3: SlurmdPort: \"abc\" is not a port number",
            inc.display()
        )
    );

    let main = write(d, "slurm3.conf", "Include\n");
    assert!(
        SlurmConf::load(&main)
            .unwrap_err()
            .to_string()
            .ends_with(":1: Include without a file name")
    );
    let main = write(d, "slurm4.conf", "Include a.conf b.conf\n");
    assert!(
        SlurmConf::load(&main)
            .unwrap_err()
            .to_string()
            .contains(":1: Include a.conf: unexpected text after the file name: \"b.conf\"")
    );
    let main = write(d, "slurm5.conf", "Include %c.conf\n");
    assert!(
        SlurmConf::load(&main)
            .unwrap_err()
            .to_string()
            .contains("%c needs ClusterName")
    );
    // Not an include: leading blanks, or no blank after the word.
    let main = write(d, "slurm6.conf", "Includes=1\n");
    assert!(SlurmConf::load(&main).is_ok());
    let main = write(d, "slurm7.conf", " Include x.conf\n");
    assert!(matches!(
        SlurmConf::load(&main),
        Err(ConfError::Syntax { line: 1, .. })
    ));
    // An included directory is not a file.
    write(d, "dir.d/x", "");
    let main = write(d, "slurm8.conf", "Include dir.d\n");
    assert!(matches!(
        SlurmConf::load(&main),
        Err(ConfError::Include { .. })
    ));
}

#[test]
fn include_loops_and_depth() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    let main = write(d, "slurm.conf", "Include a.conf\n");
    let a = write(d, "a.conf", "SlurmUser=x\nInclude ./slurm.conf\n");
    let err = SlurmConf::load(&main).unwrap_err();
    assert!(
        matches!(&err, ConfError::IncludeLoop { path, line: 2, .. } if *path == a),
        "{err}"
    );
    assert!(err.to_string().contains("include loop"));

    let selfish = write(d, "self.conf", "Include self.conf\n");
    assert!(matches!(
        SlurmConf::load(&selfish),
        Err(ConfError::IncludeLoop { line: 1, .. })
    ));

    for i in 0..=MAX_INCLUDE_DEPTH + 1 {
        write(
            d,
            &format!("deep{i}.conf"),
            &format!("Include deep{}.conf\n", i + 1),
        );
    }
    write(
        d,
        &format!("deep{}.conf", MAX_INCLUDE_DEPTH + 2),
        "SlurmUser=deep\n",
    );
    let err = SlurmConf::load(&d.join("deep0.conf")).unwrap_err();
    assert!(matches!(err, ConfError::IncludeDepth { .. }), "{err}");
    // Exactly at the limit is fine.
    let ok = SlurmConf::load(&d.join("deep2.conf")).unwrap();
    assert_eq!(ok.slurm_user, "deep");
}

#[test]
fn load_errors_name_the_file() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("slurm.conf");
    let err = SlurmConf::load(&missing).unwrap_err();
    assert!(matches!(&err, ConfError::Read { path, .. } if *path == missing));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", missing.display()))
    );
    let err = SlurmConf::load(tmp.path()).unwrap_err();
    assert!(err.to_string().ends_with("not a regular file"), "{err}");
}

#[test]
fn cgroup_conf_beside_slurm_conf() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    let main = write(d, "slurm.conf", "ClusterName=c\n");
    let c = SlurmConf::load(&main).unwrap();
    assert_eq!(c.cgroup, CgroupConf::default());

    let cg = write(
        d,
        "cgroup.conf",
        "CgroupPlugin=cgroup/v2\nCgroupMountpoint=/mnt/cg/\nconstraincores=YES\n\
         ConstrainRAMSpace=true\nConstrainSwapSpace=0\nConstrainDevices=up\n\
         IgnoreSystemd=yes\nCgroupJobIdPaths=yes\nCgroupSlice=slurm.slice\nAllowedRAMSpace=100\n",
    );
    let c = SlurmConf::load(&main).unwrap();
    assert_eq!(
        c.cgroup,
        CgroupConf {
            path: Some(cg.clone()),
            plugin: Some("cgroup/v2".into()),
            mountpoint: PathBuf::from("/mnt/cg"),
            slice: Some("slurm.slice".into()),
            constrain_cores: true,
            constrain_ram_space: true,
            constrain_swap_space: false,
            constrain_devices: true,
            ignore_systemd: true,
            job_id_paths: true,
            provenance: c.cgroup.provenance.clone(),
        }
    );
    assert_eq!(
        c.cgroup
            .provenance
            .last("cgroupslice")
            .map(|s| s.origin.line),
        Some(9)
    );
    // parse() leaves cgroup.conf alone.
    assert_eq!(
        SlurmConf::parse("", &main).unwrap().cgroup,
        CgroupConf::default()
    );

    write(d, "cgroup.conf", "\nConstrainCores=maybe\n");
    assert_eq!(
        SlurmConf::load(&main).unwrap_err().to_string(),
        format!(
            "{}:2: ConstrainCores: \"maybe\" is not yes or no",
            cg.display()
        )
    );
    let root = CgroupConf::parse("CgroupMountpoint=/\n", &cg).unwrap();
    assert_eq!(root.mountpoint, Path::new("/"));
}

#[test]
fn debian_style_config() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    let main = write(d, "slurm.conf", DEBIAN_SLURM_CONF);
    let cg = write(d, "cgroup.conf", DEBIAN_CGROUP_CONF);
    let c = SlurmConf::load(&main).unwrap();
    assert_eq!(c.cluster_name.as_deref(), Some("vm"));
    assert_eq!(c.slurm_user, "slurm");
    assert_eq!(c.slurmd_port, 6818);
    assert_eq!(c.slurmd_spool_dir, "/var/lib/slurm/slurmd");
    assert_eq!(c.auth_type, "auth/munge");
    assert_eq!(c.proctrack_type.as_deref(), Some("proctrack/cgroup"));
    assert_eq!(c.task_plugin, ["task/affinity", "task/cgroup"]);
    assert!(c.has_prolog_flag("contain") && c.has_prolog_flag("x11"));
    assert_eq!(
        c.prolog.as_deref(),
        Some("/usr/lib/slurm-adopt/adopt-prolog")
    );
    assert_eq!(
        c.task_prolog.as_deref(),
        Some("/usr/lib/slurm-adopt/adopt-taskprolog")
    );
    assert_eq!(
        c.epilog.as_deref(),
        Some("/usr/lib/slurm-adopt/adopt-epilog")
    );
    assert_eq!(c.job_container_type, None);
    assert_eq!(c.message_timeout_secs, 10);
    assert_eq!(c.tcp_timeout_secs, 2);
    assert!(c.has_launch_parameter("ulimit_pam_adopt"));
    assert_eq!(c.nodes.len(), 5);
    assert_eq!(c.node("vm"), Some(&node("vm", "vm", "vm", None)));
    assert_eq!(
        c.node("cn03"),
        Some(&node("cn03", "cn03", "192.168.10.13", Some(6818)))
    );
    let vm = c.node("vm").unwrap();
    assert_eq!(c.spool_dir(vm), Path::new("/var/lib/slurm/slurmd"));
    assert_eq!(c.cgroup.path.as_deref(), Some(cg.as_path()));
    assert_eq!(c.cgroup.plugin.as_deref(), Some("cgroup/v1"));
    assert!(c.cgroup.constrain_cores && c.cgroup.constrain_devices);
    assert!(c.cgroup.constrain_ram_space && !c.cgroup.constrain_swap_space);
}

#[test]
fn provenance_names_the_file_and_line_through_includes() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    let nodes = write(
        d,
        "conf.d/nodes.conf",
        "# nodes\nNodeName=DEFAULT Port=7000\nNodeName=c[1-4] \\\n  CPUs=2\nNodeName=gpu1\n",
    );
    let main = write(
        d,
        "slurm.conf",
        "Prolog=/a\nInclude conf.d/*.conf\nPrologFlags=Contain\nProlog=\"/b\"\nprologflags=X11\n",
    );
    let c = SlurmConf::load(&main).unwrap();
    let at = |file: &Path, line| Origin {
        file: file.to_owned(),
        line,
    };
    assert_eq!(c.origin("PrologFlags"), Some(&at(&main, 5)));
    assert_eq!(c.origin("SlurmUser"), None);
    let prologs: Vec<_> = c
        .provenance
        .all("prolog")
        .map(|s| (s.value.as_str(), s.origin.line))
        .collect();
    assert_eq!(prologs, [("/a", 1), ("/b", 4)]);
    // A continued line is where it starts; DEFAULT names no node.
    assert_eq!(c.node_origin("c3"), Some(&at(&nodes, 3)));
    assert_eq!(c.node_origin("gpu1"), Some(&at(&nodes, 5)));
    assert_eq!(c.node_origin("DEFAULT"), None);
    assert_eq!(c.node_origin("c5"), None);
}

/// The reader runs inside sshd: what the file is, is judged on the open fd.
mod opened_safely {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, Instant};

    fn load_err(path: &Path) -> String {
        SlurmConf::load(path).unwrap_err().to_string()
    }

    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = TempDir::new().unwrap();
        let fifo = dir.path().join("slurm.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let started = Instant::now();
        let err = load_err(&fifo);
        assert!(started.elapsed() < Duration::from_secs(1), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
        assert!(
            err.contains(&fifo.display().to_string()),
            "names the file: {err}"
        );
    }

    #[test]
    fn dev_null_reads_as_empty() {
        let dir = TempDir::new().unwrap();
        let conf = write(
            dir.path(),
            "slurm.conf",
            "NodeName=c1 CPUs=1\nInclude /dev/null\n",
        );
        SlurmConf::load(&conf).unwrap();
    }

    #[test]
    fn a_world_writable_file_is_refused() {
        let dir = TempDir::new().unwrap();
        let conf = write(dir.path(), "slurm.conf", "NodeName=c1 CPUs=1\n");
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o666)).unwrap();
        let err = load_err(&conf);
        assert!(err.contains("writable by others"), "{err}");
    }

    #[test]
    fn a_symlink_is_followed_once_but_not_twice() {
        let dir = TempDir::new().unwrap();
        let real = write(dir.path(), "shared/slurm.conf", "NodeName=c1 CPUs=1\n");
        let once = dir.path().join("slurm.conf");
        symlink(&real, &once).unwrap();
        // The link's owner is the reader (the test's uid): followed.
        SlurmConf::load(&once).unwrap();
        let twice = dir.path().join("slurm-twice.conf");
        symlink(&once, &twice).unwrap();
        let err = load_err(&twice);
        assert!(err.contains("to another link"), "{err}");
    }

    #[test]
    fn a_refusal_is_typed_and_names_the_file_to_fix() {
        let dir = TempDir::new().unwrap();
        let real = write(dir.path(), "shared/slurm.conf", "NodeName=c1 CPUs=1\n");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o646)).unwrap();
        let link = dir.path().join("slurm.conf");
        symlink(&real, &link).unwrap();
        let err = SlurmConf::load(&link).unwrap_err();
        let (file, refusal) = err.refusal().expect("a refusal");
        assert_eq!(file, real.as_path(), "the link's target is the file to fix");
        assert_eq!(
            refusal,
            &FileRefusal::Writable {
                mode: 0o646,
                via: Some(real.clone())
            }
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("its target {} is mode 0646", real.display())),
            "{text}"
        );
        // Through an Include, the included file is the one named.
        let top = write(
            dir.path(),
            "top.conf",
            &format!("Include {}\n", real.display()),
        );
        let err = SlurmConf::load(&top).unwrap_err();
        let (file, refusal) = err.refusal().expect("a refusal");
        assert_eq!(file, real.as_path());
        assert!(matches!(refusal, FileRefusal::Writable { via: None, .. }));
        // A missing file or a syntax error is no refusal.
        assert!(
            SlurmConf::load(&dir.path().join("absent"))
                .unwrap_err()
                .refusal()
                .is_none()
        );
        let bad = write(dir.path(), "bad.conf", "what\n");
        assert!(SlurmConf::load(&bad).unwrap_err().refusal().is_none());
    }

    #[test]
    fn a_hostile_line_cannot_push_the_file_and_line_out_of_the_message() {
        let dir = TempDir::new().unwrap();
        let long = format!("SlurmdPort={}\n", "9\n".replace('\n', "x").repeat(5000));
        let conf = write(dir.path(), "slurm.conf", &long);
        let err = load_err(&conf);
        assert!(err.starts_with(&format!("{}:1:", conf.display())), "{err}");
        assert!(err.len() < 600, "bounded: {} chars", err.len());
        let conf = write(dir.path(), "slurm2.conf", "SlurmdPort=9\u{1b}[2J\n");
        let err = load_err(&conf);
        assert!(
            !err.contains('\u{1b}'),
            "control characters escaped: {err:?}"
        );
    }
}

#[test]
fn slurmd_user_is_parsed_apart_from_slurm_user() {
    let c = parse("SlurmUser=slurm\nSLURMDUSER=slurmd\n");
    assert_eq!(c.slurm_user, "slurm");
    assert_eq!(c.slurmd_user, "slurmd");
}
