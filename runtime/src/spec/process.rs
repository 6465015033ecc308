//! The container's first process: what runs (Kubernetes' command/args rules over the
//! image's ENTRYPOINT/CMD), its environment and working directory.

use std::path::PathBuf;

use cri_proto::v1;
use oci_spec::image::ImageConfiguration;

use crate::{Error, Result};

/// containerd's PATH for images that set none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes' rules: `command` replaces ENTRYPOINT and drops CMD; `args` replace CMD.
pub fn process_args(config: &v1::ContainerConfig, image: &ImageConfiguration) -> Result<Vec<String>> {
    let image_config = image.config().clone().unwrap_or_default();
    let args = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect::<Vec<_>>()
    } else {
        let entrypoint = image_config.entrypoint().clone().unwrap_or_default();
        let cmd = if config.args.is_empty() { image_config.cmd().clone().unwrap_or_default() } else { config.args.clone() };
        entrypoint.into_iter().chain(cmd).collect()
    };
    if args.first().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidArgument(
            "no command: neither the container config nor the image gives one".into(),
        ));
    }
    Ok(args)
}

/// Image env, then CRI env (the container's value wins, keeping the image's position),
/// then PATH, HOSTNAME and HOME where still missing.
pub fn process_env(config: &v1::ContainerConfig, image: &ImageConfiguration, hostname: &str, home: &str) -> Result<Vec<String>> {
    let image_env = image.config().as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    };
    for entry in &image_env {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        if !key.is_empty() {
            set(key, value);
        }
    }
    for kv in &config.envs {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(Error::InvalidArgument(format!("environment variable name {:?} is not valid", kv.key)));
        }
        set(&kv.key, &kv.value);
    }
    let defaults = [("PATH", &DEFAULT_PATH["PATH=".len()..]), ("HOSTNAME", hostname), ("HOME", home)];
    for (key, value) in defaults {
        if !env.iter().any(|(k, _)| k == key) && !value.is_empty() {
            env.push((key.to_string(), value.to_string()));
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// CRI `working_dir`, else the image's `WorkingDir`, else `/`.
pub fn working_dir(config: &v1::ContainerConfig, image: &ImageConfiguration) -> Result<PathBuf> {
    if !config.working_dir.is_empty() {
        let dir = PathBuf::from(&config.working_dir);
        if !dir.is_absolute() {
            return Err(Error::InvalidArgument(format!("working_dir {:?} must be absolute", config.working_dir)));
        }
        return Ok(dir);
    }
    let image_dir = image.config().as_ref().and_then(|c| c.working_dir().clone()).unwrap_or_default();
    // Some images carry a relative WorkingDir; Docker reads it from `/`.
    Ok(PathBuf::from("/").join(image_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str], workdir: &str) -> ImageConfiguration {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut config = ConfigBuilder::default().env(s(env)).working_dir(workdir.to_string());
        if !entrypoint.is_empty() {
            config = config.entrypoint(s(entrypoint));
        }
        if !cmd.is_empty() {
            config = config.cmd(s(cmd));
        }
        ImageConfigurationBuilder::default().config(config.build().unwrap()).build().unwrap()
    }

    fn container(command: &[&str], args: &[&str]) -> v1::ContainerConfig {
        v1::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_command_and_args_rules() {
        let img = image(&["/entry"], &["--default"], &[], "");
        assert_eq!(process_args(&container(&[], &[]), &img).unwrap(), ["/entry", "--default"]);
        assert_eq!(process_args(&container(&[], &["--mine"]), &img).unwrap(), ["/entry", "--mine"]);
        assert_eq!(process_args(&container(&["/bin/sh"], &[]), &img).unwrap(), ["/bin/sh"]);
        assert_eq!(process_args(&container(&["/bin/sh"], &["-c", "x"]), &img).unwrap(), ["/bin/sh", "-c", "x"]);
        let cmd_only = image(&[], &["/bin/app"], &[], "");
        assert_eq!(process_args(&container(&[], &[]), &cmd_only).unwrap(), ["/bin/app"]);
        assert_eq!(process_args(&container(&[], &["/other"]), &cmd_only).unwrap(), ["/other"]);
        let empty = image(&[], &[], &[], "");
        assert!(matches!(process_args(&container(&[], &[]), &empty), Err(Error::InvalidArgument(_))));
        assert!(process_args(&container(&[""], &[]), &empty).is_err());
    }

    #[test]
    fn env_merges_with_container_winning() {
        let img = image(&[], &[], &["PATH=/img/bin", "A=image", "B=image", "EMPTY="], "");
        let mut c = container(&[], &[]);
        c.envs = vec![
            v1::KeyValue { key: "B".into(), value: "container".into() },
            v1::KeyValue { key: "C".into(), value: "x=y".into() },
        ];
        let env = process_env(&c, &img, "pod-a", "/home/app").unwrap();
        assert_eq!(env, ["PATH=/img/bin", "A=image", "B=container", "EMPTY=", "C=x=y", "HOSTNAME=pod-a", "HOME=/home/app"]);
        let bare = process_env(&container(&[], &[]), &ImageConfiguration::default(), "", "/").unwrap();
        assert_eq!(bare, [DEFAULT_PATH, "HOME=/"]);
        c.envs = vec![v1::KeyValue { key: "A=B".into(), value: "x".into() }];
        assert!(process_env(&c, &img, "", "/").is_err());
    }

    #[test]
    fn working_dir_precedence() {
        let img = image(&[], &[], &[], "/srv");
        assert_eq!(working_dir(&container(&[], &[]), &img).unwrap(), PathBuf::from("/srv"));
        let mut c = container(&[], &[]);
        c.working_dir = "/work".into();
        assert_eq!(working_dir(&c, &img).unwrap(), PathBuf::from("/work"));
        assert_eq!(working_dir(&container(&[], &[]), &ImageConfiguration::default()).unwrap(), PathBuf::from("/"));
        assert_eq!(working_dir(&container(&[], &[]), &image(&[], &[], &[], "app")).unwrap(), PathBuf::from("/app"));
        c.working_dir = "rel".into();
        assert!(working_dir(&c, &img).is_err());
    }
}
