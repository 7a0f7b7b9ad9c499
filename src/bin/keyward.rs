//! `keyward`: the command-line interface.

// Doc comments here are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyward::launch::{self, Shell};
use keyward::socket;

/// Manage keyward, an SSH agent with a certificate and policy store.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the agent in the background (reusing a running one) and print the lines that point
    /// `SSH_AUTH_SOCK` at it: `eval "$(keyward start)"`.
    Start {
        /// Socket to serve (default: $XDG_RUNTIME_DIR/keyward/agent.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print csh syntax.
        #[arg(short = 'c')]
        csh: bool,
        /// Extra arguments passed to keyward-agent (e.g. `-- -t 1h`).
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Stop the running agent.
    Stop {
        /// Socket of the agent to stop.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print the lines that point `SSH_AUTH_SOCK` at the running agent.
    Env {
        /// Socket of the agent.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print csh syntax.
        #[arg(short = 'c')]
        csh: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn shell(csh: bool) -> Shell {
    if csh { Shell::C } else { Shell::Bourne }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Start {
            socket,
            csh,
            agent_args,
        } => {
            let socket = socket.unwrap_or_else(socket::default_agent_socket);
            let (pid, started) = launch::start(&launch::agent_binary(), &socket, &agent_args)?;
            if !started {
                eprintln!("keyward: reusing the agent already running (pid {pid})");
            }
            print!("{}", launch::export_lines(&socket, pid, shell(csh)));
        }
        Command::Stop { socket } => {
            let socket = socket.unwrap_or_else(socket::default_agent_socket);
            let pid = launch::stop(&socket)?;
            eprintln!("keyward: stopped the agent (pid {pid})");
        }
        Command::Env { socket, csh } => {
            let socket = socket.unwrap_or_else(socket::default_agent_socket);
            let pid = launch::running_agent(&socket)
                .ok_or_else(|| launch::LaunchError::NotRunning(socket.clone()))?;
            print!("{}", launch::export_lines(&socket, pid, shell(csh)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
