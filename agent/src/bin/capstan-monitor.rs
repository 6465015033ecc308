//! `capstan-monitor`: the per-pod monitor process. The daemon starts it; see
//! `capstan_runtime::monitor` for what it does and why it is a process of its own.

fn main() -> std::process::ExitCode {
    capstan_runtime::monitor::main()
}
