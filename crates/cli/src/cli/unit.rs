//! `bpm daemon install` and `uninstall`: a systemd user unit that starts
//! the daemon at login (or at boot, with lingering on), so that what
//! should run comes back after a reboot without a command typed first.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use super::error::{CliError, Outcome};
use crate::home::Home;

/// The unit's file name.
const UNIT: &str = "bpm.service";

/// Where systemd looks for this user's units.
fn unit_path() -> Result<PathBuf, CliError> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| {
            CliError::failed(
                "neither XDG_CONFIG_HOME nor HOME is set: cannot tell where user units go",
            )
        })?;
    Ok(config.join("systemd").join("user").join(UNIT))
}

/// The unit: the daemon in the foreground for this state directory. Only
/// the daemon is stopped with the unit (`KillMode=process`): the keeper
/// and the processes run on, as they do when the daemon is stopped by hand.
fn unit_text(exe: &Path, home: &Path) -> String {
    format!(
        "# Written by `bpm daemon install`; removed by `bpm daemon uninstall`.\n\
         [Unit]\n\
         Description=bpm, the background process manager ({home})\n\
         \n\
         [Service]\n\
         Type=simple\n\
         Environment=\"BPM_HOME={home}\"\n\
         ExecStart=\"{exe}\" daemon\n\
         ExecStop=\"{exe}\" daemon stop\n\
         KillMode=process\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exe = quoted(exe),
        home = quoted(home),
    )
}

/// `path` for a quoted value of a unit file: `%` (a specifier), `\` and
/// `"` escaped.
fn quoted(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('%', "%%")
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Runs `systemctl --user ARGS`; `Err` with what it said when it fails.
fn systemctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Whether a systemd user manager answers for this user.
fn systemd_runs() -> Result<(), String> {
    systemctl(&["show-environment"])
}

/// Whether this user's manager runs without a login session (lingering):
/// `None` when loginctl cannot tell.
fn lingering(user: &str) -> Option<bool> {
    let out = Command::new("loginctl")
        .args(["show-user", user, "--property=Linger", "--value"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// `bpm daemon install`.
pub(super) fn install(home: &Home) -> Outcome {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot tell where bpm is: {e}")))?;
    let text = unit_text(&exe, &home.dir);
    let path = unit_path()?;
    if let Err(why) = systemd_runs() {
        eprintln!(
            "bpm: systemd does not run for this user here ({why}), so nothing was installed.\n\
             bpm: the unit is below: place it at {} where systemd runs, then\n\
             bpm: `systemctl --user daemon-reload && systemctl --user enable {UNIT}`.",
            path.display()
        );
        out!("{text}");
        return Ok(ExitCode::from(1));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, &text)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    systemctl(&["daemon-reload"])
        .and_then(|()| systemctl(&["enable", UNIT]))
        .map_err(|e| {
            CliError::failed(format!(
                "wrote {} but systemd refused to enable it: {e}",
                path.display()
            ))
        })?;
    out!(
        "wrote {}\nenabled {UNIT}: the daemon starts at login, for BPM_HOME={}",
        path.display(),
        home.dir.display()
    );
    let user = std::env::var("USER").unwrap_or_default();
    if !user.is_empty() && lingering(&user) == Some(false) {
        out!(
            "lingering is off for {user}: the daemon starts at login, not at boot; for boot, run\n  loginctl enable-linger {user}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bpm daemon uninstall`.
pub(super) fn uninstall() -> Outcome {
    let path = unit_path()?;
    if !path.exists() {
        out!("no unit at {}: nothing to remove", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    if systemd_runs().is_ok() {
        systemctl(&["disable", UNIT])
            .map_err(|e| CliError::failed(format!("systemd refused to disable {UNIT}: {e}")))?;
    }
    std::fs::remove_file(&path)
        .map_err(|e| CliError::failed(format!("cannot remove {}: {e}", path.display())))?;
    if systemd_runs().is_ok() {
        let _ = systemctl(&["daemon-reload"]);
    }
    out!(
        "removed {} (a daemon that runs now runs on)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
