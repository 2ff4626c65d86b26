//! `slurmd-shim`: run the test double as a process, for scripts and
//! containers that need fake stepd sockets or a fake slurmd answering
//! callerid without a Rust test around them.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use slurmd_shim::slurmd::{self, Answer, SlurmdConfig, SlurmdShim};
use slurmd_shim::stepd::{BATCH_STEP_ID, EXTERN_STEP_ID, FakeStep, Fault, StepdShim};

const USAGE: &str = "\
Usage: slurmd-shim stepd --spool DIR --node NAME --step JOB[.STEP]:UID[:FAULT]...
       slurmd-shim slurmd --listen ADDR:PORT --munge-socket PATH --answer JOB|none [--fault NAME]
       slurmd-shim --help";

const HELP: &str = "\
NAME
    slurmd-shim - stand-in for slurmstepd sockets and slurmd's callerid
    RPC, for testing pam_adopt

SYNOPSIS
    slurmd-shim stepd --spool DIR --node NAME --step JOB[.STEP]:UID[:FAULT]
                      [--step ...] [--protocol-version VERSION]
                      [--x11 DISPLAY[:XAUTHORITY]] [--namespace FILE]
    slurmd-shim slurmd --listen ADDR:PORT --munge-socket PATH
                       --answer JOB|none [--fault NAME] [--node-name NAME]
                       [--release VERSION]
    slurmd-shim --help

DESCRIPTION
    In stepd mode, slurmd-shim creates one unix socket per --step in DIR,
    named NAME_JOB.STEP as slurmstepd names its sockets in SlurmdSpoolDir,
    with mode 0777. Each socket answers the slurmstepd protocol (handshake,
    STATE, STEP_UID, ADD_EXTERN_PID, X11_DISPLAY, GET_NS_FD, GET_NS_FDS,
    DAEMON_PID) the way a slurmstepd of the chosen protocol version does,
    or misbehaves as FAULT asks. Every connection is served by its own
    thread, so a hung connection does not hold up the others.

    Once all sockets exist, one line \"listening PATH\" per socket is
    written to standard output. The sockets are served until SIGTERM or
    SIGINT, then removed.

    There is no authorisation: any peer may add pids. Never point a real
    PAM stack at a spool directory served by this program.

    In slurmd mode, slurmd-shim listens on ADDR:PORT (port 0 picks a free
    one) and answers REQUEST_NETWORK_CALLERID (5035) with
    RESPONSE_NETWORK_CALLERID (5036) in the request's header version, as
    a slurmd does: the request's munge credential must decode, and the
    reply is signed through PATH with the K12 hash of its body, for the
    requester's uid only. Every request gets the same --answer. Once
    listening, one line \"listening ADDR:PORT\" is written to standard
    output; it serves until SIGTERM or SIGINT.

OPTIONS
  stepd mode
    --spool DIR
        Directory to create the sockets in. It must exist.

    --node NAME
        Node name used in the socket names.

    --step JOB[.STEP]:UID[:FAULT]
        A step of job JOB owned by UID. STEP is extern (the default),
        batch, or a number. May be given many times.

    --protocol-version VERSION
        The version every step answers the handshake with, as a release
        (22.05 ... 26.05) or a number (0x2C00, 11264). Default 22.05.
        From 25.11 on, GET_NS_FDS is answered, and GET_NS_FD gets no reply
        at all when there is no namespace.

    --x11 DISPLAY[:XAUTHORITY]
        X11_DISPLAY answers this display and xauthority path.
        Default: display 0, no path.

    --namespace FILE
        GET_NS_FD and GET_NS_FDS pass a descriptor of FILE (opened anew for
        each request, O_NONBLOCK) as a mount namespace. Default: no namespace.
        A hostile stepd: a FIFO without writer, a regular file, /dev/zero.

    --help, -h
        Print this text and exit.

  slurmd mode
    --listen ADDR:PORT
        TCP address to listen on, e.g. 127.0.0.1:6818 or 127.0.0.1:0.

    --munge-socket PATH
        munged's socket, for checking requests and signing replies.

    --answer JOB|none
        The job id to name, or none for \"no job owns that connection\".

    --fault NAME
        Misbehave on every connection (FAULTS below).

    --node-name NAME
        The NodeName put in replies. Default: shim.

    --release VERSION
        Accept only the header versions this release of slurmd accepts
        (its own and two older, three from 24.11) and refuse others as it
        does: close without reply before 25.05, an unauthenticated
        RESPONSE_SLURM_RC 1007 from 25.05. Default: accept 22.05 to 26.05.

FAULTS
  stepd mode (--step JOB:UID:FAULT)
    none              behave (the default)
    hang-handshake    read the client's version, never answer
    hang              answer the handshake, never answer a request
    close             answer the handshake, close on the first request
    reject-handshake  answer the handshake with -1 and close
    wrong-version     answer the handshake with 0x1000, older than any stepd
    garbage           answer requests with short or absurd replies, then close
    slow=MS           wait MS milliseconds before every reply
    reject-add-pid    answer ADD_EXTERN_PID with rc -1
    close-on-add-pid  close on ADD_EXTERN_PID without reading the pid, as a
                      stepd of 24.11.6 or later does for a cancelled step
    bad-x11           adopt, then answer X11_DISPLAY with a 1 GiB
                      xauthority length and close
    truncated         lengths that promise more than is sent, then close:
                      X11_DISPLAY 8 of 64 xauthority bytes, GET_NS_FDS one
                      type of a count of 2, GET_NS_FD the fd number without
                      the fd, STEP_LIST_PIDS one pid of 4
    oversize          lengths beyond any bound (X11_DISPLAY's xauthority and
                      GET_NS_FDS's count i32::MAX, STEP_LIST_PIDS's count
                      u32::MAX), then silence with the connection open
    extra-fds         answer the namespace request with three descriptors
                      where one is announced: the namespace (--namespace, or
                      the shim's own mount namespace), /dev/null, a pipe end
    hang-add-pid      read ADD_EXTERN_PID's pid, never answer
    hang-x11          adopt, then answer X11_DISPLAY with the display and an
                      xauthority length, and never send the path

  slurmd mode (--fault NAME)
    none              behave (the default)
    hang              read the request, never answer
    slow=MS           wait MS milliseconds, then answer
    close             read the request, close without reply
    wrong-version     treat the header version as unknown: close without
                      reply, as 22.05 to 24.11 do
    version-error-rc  treat the header version as unknown: answer
                      RESPONSE_SLURM_RC 1005
    header-rejected   treat the header version as unknown the 25.05+ way:
                      unauthenticated RESPONSE_SLURM_RC 1007
    malformed-body    a correctly signed reply whose body is truncated
    wrong-uid         a reply signed by uid 65534 (needs root; otherwise
                      signed by the shim's own uid)
    bad-hash          a reply whose credential hashes another body
    other-users-job=JOB
                      name JOB whatever --answer says

EXIT STATUS
    0   stopped by SIGTERM or SIGINT
    1   a socket could not be created, or signals could not be set up
    2   the command line was wrong

EXAMPLES
    Two jobs of uid 1000 on node n1, the second one wedged:

        slurmd-shim stepd --spool /tmp/spool --node n1 \\
            --step 10:1000 --step 11:1000:hang

    A 25.11 extern step and batch step passing a namespace:

        slurmd-shim stepd --spool /tmp/spool --node n1 \\
            --protocol-version 25.11 --namespace /proc/self/ns/mnt \\
            --step 12:1000 --step 12.batch:1000

    A slurmd on the usual port that says every connection is job 42:

        slurmd-shim slurmd --listen 127.0.0.1:6818 \\
            --munge-socket /run/munge/munge.socket.2 --answer 42
";

/// The release table from the protocol reference.
const RELEASES: [(&str, u32); 8] = [
    ("22.05", 0x2600),
    ("23.02", 0x2700),
    ("23.11", 0x2800),
    ("24.05", 0x2900),
    ("24.11", 0x2A00),
    ("25.05", 0x2B00),
    ("25.11", 0x2C00),
    ("26.05", 0x2D00),
];

#[derive(Debug)]
enum Command {
    Help,
    Stepd(StepdArgs),
    Slurmd(SlurmdArgs),
}

#[derive(Debug)]
struct SlurmdArgs {
    listen: SocketAddr,
    config: SlurmdConfig,
}

#[derive(Debug)]
struct StepdArgs {
    spool: PathBuf,
    node: String,
    steps: Vec<FakeStep>,
}

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(bad) => return usage_error(&format!("argument {bad:?} is not UTF-8")),
        }
    }
    match parse(&args) {
        Ok(Command::Help) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Command::Stepd(stepd)) => run_stepd(stepd),
        Ok(Command::Slurmd(args)) => run_slurmd(args),
        Err(message) => usage_error(&message),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("slurmd-shim: {message}\n{USAGE}");
    ExitCode::from(2)
}

/// SIGTERM and SIGINT, blocked. Call before any thread exists, so every
/// thread inherits the mask and the signals stay pending for `wait`.
fn block_stop_signals() -> Option<SigSet> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    match signals.thread_block() {
        Ok(()) => Some(signals),
        Err(e) => {
            eprintln!("slurmd-shim: cannot block SIGTERM/SIGINT: {e}");
            None
        }
    }
}

fn wait_for_stop(signals: SigSet) -> ExitCode {
    match signals.wait() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slurmd-shim: waiting for a signal failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_slurmd(args: SlurmdArgs) -> ExitCode {
    let Some(signals) = block_stop_signals() else {
        return ExitCode::FAILURE;
    };
    let shim = match SlurmdShim::start(args.listen, args.config) {
        Ok(shim) => shim,
        Err(e) => {
            eprintln!("slurmd-shim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {}", shim.local_addr());
    let _ = out.flush();
    drop(out);
    let status = wait_for_stop(signals);
    for error in shim.errors() {
        eprintln!("slurmd-shim: {error}");
    }
    drop(shim);
    status
}

fn run_stepd(args: StepdArgs) -> ExitCode {
    let Some(signals) = block_stop_signals() else {
        return ExitCode::FAILURE;
    };
    let shim = match StepdShim::start(&args.spool, &args.node, args.steps) {
        Ok(shim) => shim,
        Err(e) => {
            eprintln!(
                "slurmd-shim: cannot serve sockets in {}: {e}",
                args.spool.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for path in shim.socket_paths() {
        let _ = writeln!(out, "listening {}", path.display());
    }
    let _ = out.flush();
    drop(out);
    let status = wait_for_stop(signals);
    drop(shim);
    status
}

fn parse(args: &[String]) -> Result<Command, String> {
    let mut rest = args.iter();
    match rest.next().map(String::as_str) {
        None => Err("no mode given".to_owned()),
        Some("--help" | "-h") => Ok(Command::Help),
        Some("stepd") => parse_stepd(rest),
        Some("slurmd") => parse_slurmd(rest),
        Some(other) => Err(format!(
            "unknown mode {other:?} (expected \"stepd\" or \"slurmd\")"
        )),
    }
}

fn parse_slurmd<'a>(mut rest: impl Iterator<Item = &'a String>) -> Result<Command, String> {
    let mut listen = None;
    let mut munge_socket = None;
    let mut answer = None;
    let mut fault = slurmd::Fault::None;
    let mut node_name = None;
    let mut release = None;
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        if matches!(flag, "--help" | "-h") {
            return Ok(Command::Help);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--listen" => {
                let text = value()?;
                listen = Some(
                    text.parse::<SocketAddr>()
                        .map_err(|_| format!("--listen {text:?} is not ADDR:PORT"))?,
                );
            }
            "--munge-socket" => munge_socket = Some(PathBuf::from(value()?)),
            "--answer" => answer = Some(parse_answer(&value()?)?),
            "--fault" => {
                fault = value()?
                    .parse::<slurmd::Fault>()
                    .map_err(|e| e.to_string())?;
            }
            "--node-name" => node_name = Some(value()?),
            "--release" => {
                let text = value()?;
                let version = parse_version(&text)?;
                release = Some(
                    u16::try_from(version)
                        .map_err(|_| format!("--release {text:?} is not a protocol version"))?,
                );
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    let munge_socket = munge_socket.ok_or("--munge-socket is required")?;
    let answer = answer.ok_or("--answer is required")?;
    let mut config = SlurmdConfig::new(munge_socket).answer(answer).fault(fault);
    if let Some(name) = node_name {
        config.node_name = name;
    }
    if let Some(version) = release {
        config = config.like_release(version);
    }
    Ok(Command::Slurmd(SlurmdArgs { listen, config }))
}

/// `JOB` or `none`.
fn parse_answer(text: &str) -> Result<Answer, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Answer::NotFound);
    }
    match text.parse::<u32>() {
        Ok(job) if job != 0 && job < slurmd::NO_VAL => Ok(Answer::Job(job)),
        _ => Err(format!("--answer {text:?}: expected a job id or none")),
    }
}

fn parse_stepd<'a>(mut rest: impl Iterator<Item = &'a String>) -> Result<Command, String> {
    let mut spool = None;
    let mut node = None;
    let mut specs = Vec::new();
    let mut version = None;
    let mut x11 = None;
    let mut namespace = None;
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        if matches!(flag, "--help" | "-h") {
            return Ok(Command::Help);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--spool" => spool = Some(PathBuf::from(value()?)),
            "--node" => node = Some(value()?),
            "--step" => specs.push(value()?),
            "--protocol-version" => version = Some(parse_version(&value()?)?),
            "--x11" => x11 = Some(parse_x11(&value()?)?),
            "--namespace" => namespace = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let spool = spool.ok_or("--spool is required")?;
    let node = node.ok_or("--node is required")?;
    if node.is_empty() || node.contains('/') {
        return Err(format!("--node {node:?} cannot be part of a file name"));
    }
    if specs.is_empty() {
        return Err("at least one --step is required".to_owned());
    }
    let mut steps = Vec::new();
    for spec in &specs {
        let mut step = parse_step(spec)?;
        if let Some(version) = version {
            step.protocol_version = version;
        }
        step.x11.clone_from(&x11);
        step.namespace.clone_from(&namespace);
        steps.push(step);
    }
    Ok(Command::Stepd(StepdArgs { spool, node, steps }))
}

/// `JOB[.STEP]:UID[:FAULT]`
fn parse_step(spec: &str) -> Result<FakeStep, String> {
    let bad = |why: &str| format!("--step {spec:?}: {why}");
    let mut fields = spec.splitn(3, ':');
    let job = fields.next().unwrap_or_default();
    let uid = fields
        .next()
        .ok_or_else(|| bad("expected JOB[.STEP]:UID[:FAULT]"))?;
    let (job, step_id) = match job.split_once('.') {
        None => (job, EXTERN_STEP_ID),
        Some((job, "extern")) => (job, EXTERN_STEP_ID),
        Some((job, "batch")) => (job, BATCH_STEP_ID),
        Some((job, step)) => (job, step.parse().map_err(|_| bad("bad step id"))?),
    };
    let job_id = job.parse().map_err(|_| bad("bad job id"))?;
    let uid = uid.parse().map_err(|_| bad("bad uid"))?;
    let mut step = FakeStep::extern_step(job_id, uid);
    step.step_id = step_id;
    if let Some(fault) = fields.next() {
        step.fault = fault.parse::<Fault>().map_err(|e| bad(&e.to_string()))?;
    }
    Ok(step)
}

fn parse_version(text: &str) -> Result<u32, String> {
    if let Some(&(_, v)) = RELEASES.iter().find(|(name, _)| *name == text) {
        return Ok(v);
    }
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("--protocol-version {text:?} is not a release or a number"))
}

/// `DISPLAY[:XAUTHORITY]`
fn parse_x11(text: &str) -> Result<(i32, String), String> {
    let (display, path) = text.split_once(':').unwrap_or((text, ""));
    let display = display
        .parse()
        .map_err(|_| format!("--x11 {text:?}: bad display number"))?;
    Ok((display, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_steps_faults_and_globals() {
        let args = strings(&[
            "stepd",
            "--spool=/tmp/s",
            "--node",
            "n1",
            "--step",
            "10:1000",
            "--step",
            "11.batch:1001:slow=250",
            "--step",
            "12.7:0:hang",
            "--protocol-version",
            "25.11",
            "--x11",
            "10:/tmp/xa",
        ]);
        let Ok(Command::Stepd(stepd)) = parse(&args) else {
            panic!("parse failed");
        };
        assert_eq!(stepd.spool, PathBuf::from("/tmp/s"));
        assert_eq!(stepd.node, "n1");
        let ids: Vec<_> = stepd
            .steps
            .iter()
            .map(|s| (s.job_id, s.step_id, s.uid))
            .collect();
        assert_eq!(
            ids,
            [
                (10, EXTERN_STEP_ID, 1000),
                (11, BATCH_STEP_ID, 1001),
                (12, 7, 0)
            ]
        );
        assert_eq!(
            stepd.steps[1].fault,
            Fault::Slow(std::time::Duration::from_millis(250))
        );
        assert_eq!(stepd.steps[2].fault, Fault::HangOnRequest);
        assert!(stepd.steps.iter().all(|s| s.protocol_version == 0x2C00));
        assert_eq!(stepd.steps[0].x11, Some((10, "/tmp/xa".to_owned())));
    }

    #[test]
    fn rejects_bad_command_lines() {
        for bad in [
            &[][..],
            &["serve"],
            &["stepd", "--node", "n1", "--step", "1:2"],
            &["stepd", "--spool", "/s", "--step", "1:2"],
            &["stepd", "--spool", "/s", "--node", "n1"],
            &["stepd", "--spool", "/s", "--node", "n1", "--step", "1"],
            &["stepd", "--spool", "/s", "--node", "n1", "--step", "x:2"],
            &[
                "stepd",
                "--spool",
                "/s",
                "--node",
                "n1",
                "--step",
                "1:2:explode",
            ],
            &[
                "stepd", "--spool", "/s", "--node", "n1", "--step", "1:2", "--bogus",
            ],
            &["stepd", "--spool"],
            &["stepd", "--spool", "/s", "--node", "a/b", "--step", "1:2"],
        ] {
            assert!(parse(&strings(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn versions_by_release_or_number() {
        assert_eq!(parse_version("22.05"), Ok(0x2600));
        assert_eq!(parse_version("0x2C00"), Ok(0x2C00));
        assert_eq!(parse_version("11520"), Ok(0x2D00));
        assert!(parse_version("21.08x").is_err());
    }

    #[test]
    fn parses_the_slurmd_mode() {
        let args = strings(&[
            "slurmd",
            "--listen",
            "127.0.0.1:0",
            "--munge-socket=/run/m/s",
            "--answer",
            "77",
            "--fault",
            "slow=300",
            "--node-name",
            "src1",
            "--release",
            "24.11",
        ]);
        let Ok(Command::Slurmd(a)) = parse(&args) else {
            panic!("parse failed");
        };
        assert_eq!(a.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert_eq!(a.config.munge_socket, PathBuf::from("/run/m/s"));
        assert_eq!(a.config.default_answer, Answer::Job(77));
        assert_eq!(
            a.config.fault,
            slurmd::Fault::Slow(std::time::Duration::from_millis(300))
        );
        assert_eq!(a.config.node_name, "src1");
        assert_eq!(
            a.config.accepted_versions,
            Some(vec![0x2A00, 0x2900, 0x2800, 0x2700])
        );

        let none = strings(&[
            "slurmd",
            "--listen",
            "[::1]:6818",
            "--munge-socket",
            "/s",
            "--answer",
            "none",
        ]);
        let Ok(Command::Slurmd(a)) = parse(&none) else {
            panic!("parse failed");
        };
        assert_eq!(a.config.default_answer, Answer::NotFound);
        assert_eq!(a.config.fault, slurmd::Fault::None);
        assert_eq!(a.config.accepted_versions, None);

        for bad in [
            &["slurmd", "--munge-socket", "/s", "--answer", "1"][..],
            &["slurmd", "--listen", "127.0.0.1:1", "--answer", "1"],
            &["slurmd", "--listen", "127.0.0.1:1", "--munge-socket", "/s"],
            &[
                "slurmd",
                "--listen",
                "localhost",
                "--munge-socket",
                "/s",
                "--answer",
                "1",
            ],
            &[
                "slurmd",
                "--listen",
                "127.0.0.1:1",
                "--munge-socket",
                "/s",
                "--answer",
                "0",
            ],
            &[
                "slurmd",
                "--listen",
                "127.0.0.1:1",
                "--munge-socket",
                "/s",
                "--answer",
                "1",
                "--fault",
                "explode",
            ],
        ] {
            assert!(parse(&strings(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn slurmd_fault_names_round_trip() {
        use slurmd::Fault as F;
        for fault in [
            F::None,
            F::Hang,
            F::Slow(std::time::Duration::from_millis(40)),
            F::CloseWithoutReply,
            F::WrongVersion,
            F::VersionErrorRc,
            F::HeaderRejected,
            F::MalformedBody,
            F::WrongSenderUid,
            F::BadHash,
            F::OtherUsersJob(31),
        ] {
            assert_eq!(fault.to_string().parse::<F>(), Ok(fault));
        }
        assert!("slow=x".parse::<F>().is_err());
        assert!("other-users-job=".parse::<F>().is_err());
    }

    #[test]
    fn fault_names_round_trip() {
        for fault in [
            Fault::None,
            Fault::HangBeforeHandshakeReply,
            Fault::HangOnRequest,
            Fault::CloseWithoutReply,
            Fault::RejectHandshake,
            Fault::WrongVersion,
            Fault::Garbage,
            Fault::Slow(std::time::Duration::from_millis(40)),
            Fault::RejectAddPid,
            Fault::CloseOnAddPid,
            Fault::BadX11,
            Fault::Truncated,
            Fault::Oversize,
            Fault::ExtraFds,
            Fault::HangOnAddPid,
            Fault::HangOnX11,
        ] {
            assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault));
        }
    }
}
