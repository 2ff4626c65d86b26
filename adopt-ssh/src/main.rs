//! adopt-ssh: log into a chosen Slurm job from a login node or a
//! workstation. See `adopt-ssh --help` and adopt-ssh(1).

mod client_env;
mod job;
mod relay;

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use clap::Parser;

/// Open an ssh session inside a chosen Slurm job.
///
/// `adopt-ssh JOB` logs into one of job JOB's nodes so that the session
/// lands in that job, even when you have several jobs on the node. ssh
/// goes through a relay that `srun --overlap` starts inside the job on the
/// node; the node's sshd sees a connection made by a process of job JOB,
/// and pam_adopt's callerid lookup adopts the session into it. Nothing is
/// trusted that was not before: the node's PAM module still adopts only
/// into your own jobs, and srun runs the relay only in a job of yours.
///
/// Before anything runs, the job is looked up with squeue: an id that does
/// not exist, a job of another user, a job that is not RUNNING, or a node
/// that is not one of the job's gets its own message and exit status 1.
///
/// `adopt-ssh --config JOB` prints a Host block for ~/.ssh/config instead;
/// `ssh job-JOB` then reaches the job, and so does VS Code Remote-SSH
/// (Remote-SSH: Connect to Host... job-JOB). With `--via LOGIN`, the
/// block is for a workstation outside the cluster: its ProxyCommand runs
/// adopt-ssh on LOGIN over ssh.
///
/// JOB is the job's own id: for an array task, the id squeue shows with
/// `--format=%A` (not `20_3`); for a heterogeneous job, the component's.
/// Run from inside another job (an salloc shell, a batch script),
/// adopt-ssh drops that job's SLURM_* and SRUN_* variables, all but
/// SLURM_CONF and SLURM_CLUSTERS, before it runs squeue and srun; your
/// SQUEUE_* settings are dropped too, so they cannot hide the job.
///
/// adopt-ssh must be installed on the compute nodes too (the slurm-adopt
/// package puts it in /usr/bin): the relay is the same program.
#[derive(Debug, Parser)]
#[command(
    name = "adopt-ssh",
    version,
    about,
    long_about,
    after_long_help = "\
Examples:
  adopt-ssh 4242                        a shell in job 4242 on its first node
  adopt-ssh --node c7 4242 -- nvidia-smi
  adopt-ssh --config 4242 >> ~/.ssh/config && ssh job-4242
  adopt-ssh --config --via login.hpc.example.org 4242   (on a workstation's
                                        ~/.ssh/config, for VS Code Remote-SSH)

Exit status: ssh's own when the session ran; 1 when the job cannot be
reached (no such job, not yours, not running, no such node) or srun or ssh
cannot be started; 2 for a usage error.

On the node, the login's syslog line (authpriv) reads
  pam_adopt(sshd:account): ... decision=adopt job=JOB reason=callerid_match
when the node has more than one of your jobs, and reason=only_job when
JOB is the only one."
)]
struct Cli {
    /// The job to log into, as squeue shows it in its JOBID column.
    job: String,
    /// Log into this node of the job (default: the node that runs the job
    /// script, else the first one).
    #[arg(long, short = 'w', value_name = "NODE")]
    node: Option<String>,
    /// Print an ~/.ssh/config Host block named job-JOB instead of logging
    /// in.
    #[arg(long, conflicts_with = "command")]
    config: bool,
    /// With --config: the login node a workstation goes through (the
    /// ProxyCommand becomes `ssh -T LOGIN adopt-ssh --proxy ...`).
    #[arg(long, value_name = "LOGIN", requires = "config")]
    via: Option<String>,
    /// An option for ssh (as ssh -o takes it); may be repeated.
    #[arg(long = "ssh-option", short = 'o', value_name = "OPTION")]
    ssh_options: Vec<String>,
    /// The port sshd listens on, on the compute nodes.
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// ProxyCommand mode, run by ssh: carry stdin and stdout to the
    /// node's sshd through srun and the relay.
    #[arg(long, hide = true, requires = "node")]
    proxy: bool,
    /// Relay mode, run by srun inside the job: connect stdin and stdout
    /// to sshd at ADDR (e.g. localhost:22).
    #[arg(
        long,
        hide = true,
        value_name = "ADDR",
        conflicts_with_all = ["proxy", "config", "node", "command"]
    )]
    relay: Option<String>,
    /// The command to run instead of a login shell (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(target) = &cli.relay {
        // Inside the job: srun put the relay there, so the job is not
        // looked up again.
        return match relay::relay(target) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        };
    }
    let job = match job::parse_id(&cli.job) {
        Ok(job) => job,
        Err(e) => return fail(&e.to_string()),
    };
    if cli.proxy {
        let node = cli.node.as_deref().unwrap_or_default();
        let e = relay::proxy(job, node, cli.port);
        return fail(&e.to_string());
    }
    let uid = nix::unistd::getuid().as_raw();
    let node = match job::look_up(job).and_then(|info| info.target(uid, cli.node.as_deref())) {
        Ok(node) => node,
        Err(e) => return fail(&e.to_string()),
    };
    if cli.config {
        for (what, name) in [
            ("the node", Some(node.as_str())),
            ("--via", cli.via.as_deref()),
        ] {
            if let Some(name) = name.filter(|n| !config_safe(n)) {
                return fail(&format!(
                    "{what} '{}' cannot go into an ssh config: a host name there may hold only letters, digits and . _ @ : + - (and not start with -)",
                    name.escape_debug()
                ));
            }
        }
        print!("{}", host_block(job, &node, cli.port, cli.via.as_deref()));
        return ExitCode::SUCCESS;
    }
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_else(|| "adopt-ssh".to_owned());
    let mut ssh = Command::new("ssh");
    ssh.arg("-o").arg(format!(
        "ProxyCommand={}",
        ssh_escape(&proxy_shell_command(&me, job, &node, cli.port))
    ));
    for o in &cli.ssh_options {
        ssh.arg("-o").arg(o);
    }
    // `--` before the host: nothing in the command is read as an option
    // of ssh's.
    ssh.arg("--").arg(&node).args(&cli.command);
    let e = ssh.exec();
    fail(&format!("cannot run ssh: {e}"))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("adopt-ssh: {message}");
    ExitCode::FAILURE
}

/// The ~/.ssh/config block for `job` on `node`. HostKeyAlias keeps the
/// node's own known_hosts entry in use, so the job alias asks nothing new.
fn host_block(job: u32, node: &str, port: u16, via: Option<&str>) -> String {
    let command = proxy_shell_command("adopt-ssh", job, node, port);
    let proxy = match via {
        // The remote command is one word for the login node's shell, so
        // the node name inside it is quoted once more for that shell.
        Some(login) => format!("ssh -T -- {} {}", proxy_word(login), proxy_word(&command)),
        None => ssh_escape(&command),
    };
    format!(
        "# job {job} on {node}, written by adopt-ssh; remove it when the job has ended\n\
         Host job-{job}\n    HostName {node}\n    HostKeyAlias {node}\n    ProxyCommand {proxy}\n"
    )
}

/// Whether `name` can be written into an ssh config as it is: ssh splits
/// config lines with its own quoting rules (and expands `%` in HostName),
/// so a Host block holds only plain host names, never quoting.
fn config_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@:+-".contains(&b))
}

/// The command line of ProxyCommand mode, `program` run on `node`'s behalf,
/// quoted for a shell (not yet for ssh's `%` tokens: see [`ssh_escape`]).
fn proxy_shell_command(program: &str, job: u32, node: &str, port: u16) -> String {
    format!(
        "{} --proxy --node {} --port {port} {job}",
        shell_word(program),
        shell_word(node)
    )
}

/// `text` with `%` doubled, since ssh expands `%h`, `%p` and the like in a
/// ProxyCommand before the shell sees it.
fn ssh_escape(text: &str) -> String {
    text.replace('%', "%%")
}

/// `word` as one word of a ProxyCommand: quoted for the shell ssh runs it
/// with, and escaped for ssh's `%` tokens.
fn proxy_word(word: &str) -> String {
    ssh_escape(&shell_word(word))
}

/// `word` quoted for a POSIX shell.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn host_blocks_name_the_job_and_pin_the_node() {
        let b = host_block(17, "c2", 22, None);
        assert!(b.contains("Host job-17\n"));
        assert!(b.contains("HostKeyAlias c2\n"));
        assert!(b.contains("ProxyCommand adopt-ssh --proxy --node c2 --port 22 17\n"));
        let b = host_block(17, "c2", 2222, Some("login1"));
        assert!(
            b.contains(
                "ProxyCommand ssh -T -- login1 'adopt-ssh --proxy --node c2 --port 2222 17'\n"
            ),
            "{b}"
        );
    }

    #[test]
    fn names_from_outside_cannot_add_words_or_ssh_tokens() {
        let b = host_block(17, "c2;id", 22, Some("login%h"));
        assert!(
            b.contains("ProxyCommand ssh -T -- 'login%%h' 'adopt-ssh --proxy --node '\\''c2;id'\\'' --port 22 17'\n"),
            "{b}"
        );
        assert_eq!(proxy_word("/home/a%p/adopt-ssh"), "'/home/a%%p/adopt-ssh'");
    }

    #[test]
    fn only_plain_host_names_go_into_a_config() {
        for ok in ["c1", "node-07.hpc.example.org", "alice@login1", "fe80::1"] {
            assert!(config_safe(ok), "{ok}");
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "a'b",
            "c1\nHost *",
            "c%h",
            "a b",
            "a\\b",
        ] {
            assert!(!config_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_relay_takes_no_login_options() {
        for args in [
            &["adopt-ssh", "--relay", "localhost:22", "--config", "17"][..],
            &[
                "adopt-ssh",
                "--relay",
                "localhost:22",
                "--proxy",
                "--node",
                "c1",
                "17",
            ],
            &["adopt-ssh", "--relay", "localhost:22", "17", "--", "id"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["adopt-ssh", "--relay", "localhost:22", "17"]).is_ok());
    }

    #[test]
    fn shell_words_survive_the_proxy_shell() {
        assert_eq!(shell_word("/usr/bin/adopt-ssh"), "/usr/bin/adopt-ssh");
        assert_eq!(
            shell_word("/opt/my tools/adopt-ssh"),
            "'/opt/my tools/adopt-ssh'"
        );
        assert_eq!(shell_word("a'b"), r"'a'\''b'");
        assert_eq!(shell_word(""), "''");
    }
}
