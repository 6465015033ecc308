//! `capstan`: the Kubernetes CRI runtime daemon and its operator commands.

mod agent_mode;
mod check;
mod cli;
mod config;
mod cri;
mod device_plugin;
mod logging;
mod metrics;
mod node;
mod server;
mod systemd;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ConfigCommand};
use config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("capstan: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match &cli.command {
        Some(Command::Version) => {
            println!("capstan {}", env!("CARGO_PKG_VERSION"));
            println!("CRI API: {}", cri_proto::RUNTIME_API_VERSION);
            return Ok(());
        }
        Some(Command::Config { command: ConfigCommand::Default }) => {
            print!("{}", config::DEFAULT_TOML);
            return Ok(());
        }
        _ => {}
    }
    let mut config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    cli.apply(&mut config);
    match cli.command {
        Some(Command::Config { command: ConfigCommand::Show }) => {
            let text = toml::to_string_pretty(&config).map_err(|e| e.to_string())?;
            print!("{text}");
            Ok(())
        }
        None | Some(Command::Daemon) => {
            logging::init(&config.log)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("capstan")
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            rt.block_on(server::run(config)).map_err(|e| e.to_string())
        }
        Some(Command::Check) => {
            if check::print(&check::run_all(&config)) { Ok(()) } else { Err("preflight checks failed".into()) }
        }
        Some(Command::NodeLabels { format }) => {
            let labels = node::compute(&config)?;
            let (out, note) = node::render(&labels, format, &node::node_name());
            print!("{out}");
            if let Some(note) = note {
                eprint!("{note}");
            }
            Ok(())
        }
        Some(Command::Version | Command::Config { .. }) => Ok(()),
    }
}
