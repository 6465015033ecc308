//! Facts about this node: GPUs ([`gpu`]), the disk type ([`disk`]) and the labels computed
//! from them and the config ([`labels`]), printed by `capstan node-labels`.

pub mod disk;
pub mod gpu;
pub mod labels;

use crate::config::Config;
use labels::Labels;

/// `capstan node-labels --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LabelFormat {
    /// Kubelet's `--node-labels` value (`k=v,k2=v2`).
    #[default]
    Flag,
    /// A kubeadm `JoinConfiguration` fragment.
    Yaml,
}

/// This node's labels: discovered under `node.host_root`, overridden by `node.labels`.
pub fn compute(config: &Config) -> Result<Labels, String> {
    let root = &config.node.host_root;
    let gpus = gpu::discover(root).map_err(|e| format!("cannot look for GPUs under {}: {e}", root.display()))?;
    let disk = disk::disk_type_of(&config.root, root);
    let all = labels::merge(labels::discovered(&gpus, disk), &config.node.labels);
    labels::validate_all(&all)?;
    Ok(all)
}

/// What `capstan node-labels` prints: kubelet's share on stdout (so `$(capstan node-labels)`
/// can go straight into a kubelet flag), the `kubectl label` command for the rest on stderr.
pub fn render(all: &Labels, format: LabelFormat, node_name: &str) -> (String, Option<String>) {
    let (kubelet, admin) = labels::split(all);
    let out = match format {
        LabelFormat::Flag => format!("{}\n", labels::flag_value(&kubelet)),
        LabelFormat::Yaml => labels::join_configuration_yaml(&kubelet),
    };
    let note = labels::kubectl_command(node_name, &admin).map(|cmd| {
        format!("# kubelet may not set these labels itself (NodeRestriction); once the node has joined, run:\n{cmd}\n")
    });
    (out, note)
}

/// Kubelet's default node name: the hostname, lowercased.
pub fn node_name() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().to_lowercase()).unwrap_or_else(|_| "<node>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_and_discovered_labels_render_for_kubelet_and_kubectl() {
        let root = tempfile::tempdir().unwrap();
        gpu::tests::fake_tree(root.path());
        let mut config = Config::default();
        config.node.host_root = root.path().to_path_buf();
        config.root = root.path().join("state");
        config.node.labels.insert("disktype".into(), "ssd".into());
        config.node.labels.insert("node-role.kubernetes.io/gpu".into(), "".into());
        let all = compute(&config).unwrap();
        let (out, note) = render(&all, LabelFormat::Flag, "n1");
        assert_eq!(
            out,
            "disktype=ssd,feature.node.kubernetes.io/pci-10de.present=true,nvidia.com/gpu.count=2,\
             nvidia.com/gpu.present=true,nvidia.com/gpu.product=Tesla-T4\n"
        );
        assert!(note.unwrap().contains("kubectl label node n1 --overwrite node-role.kubernetes.io/gpu="));
        let (yaml, _) = render(&all, LabelFormat::Yaml, "n1");
        assert!(yaml.contains("nvidia.com/gpu.count=2"), "{yaml}");
    }
}
