//! The binary: the process's argv handed to the library, where the program is
//! (`test_machine_monitor::cli`, in src/lib.rs).

fn main() -> std::process::ExitCode {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
    test_machine_monitor::cli(&argv0, &args)
}
