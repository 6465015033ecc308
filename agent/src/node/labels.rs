//! Node labels: the configured ones plus what discovery found, validated as Kubernetes
//! label keys and values, and split by what kubelet may set on its own Node.
//!
//! Kubelet applies `--node-labels` when it registers the Node; under the NodeRestriction
//! admission plugin it may only set keys outside the `kubernetes.io`/`k8s.io` namespaces,
//! in the `kubelet.kubernetes.io` and `node.kubernetes.io` namespaces (and their
//! subdomains), or a short list of well-known ones. Any other key is printed separately as
//! a `kubectl label` command for an administrator.

use std::collections::BTreeMap;

use super::disk::DiskType;
use super::gpu::GpuInventory;

pub type Labels = BTreeMap<String, String>;

/// Labels discovery adds. Names follow NVIDIA GPU feature discovery and node feature
/// discovery, so existing `nodeSelector`s keep matching; `kubernetes.io/os` and `/arch`
/// are left out because kubelet sets them itself.
pub fn discovered(gpus: &GpuInventory, disk: Option<DiskType>) -> Labels {
    let mut labels = Labels::new();
    if !gpus.gpus.is_empty() {
        labels.insert("nvidia.com/gpu.present".into(), "true".into());
        labels.insert("nvidia.com/gpu.count".into(), gpus.gpus.len().to_string());
        if let Some(product) = gpus.product().map(label_value_from).filter(|v| !v.is_empty()) {
            labels.insert("nvidia.com/gpu.product".into(), product);
        }
        labels.insert("feature.node.kubernetes.io/pci-10de.present".into(), "true".into());
    }
    if let Some(disk) = disk {
        labels.insert("disktype".into(), disk.label().into());
    }
    labels
}

/// Discovered labels overridden by the configured ones.
pub fn merge(discovered: Labels, configured: &Labels) -> Labels {
    let mut all = discovered;
    all.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

/// Turns free text ("Tesla T4") into a valid label value ("Tesla-T4"), as GFD does.
pub fn label_value_from(text: &str) -> String {
    let replaced: String = text
        .trim()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// Checks every key and value; the error names the first bad one.
pub fn validate_all(labels: &Labels) -> Result<(), String> {
    for (k, v) in labels {
        validate_key(k)?;
        validate_value(k, v)?;
    }
    Ok(())
}

/// A qualified name: `[prefix/]name`, prefix a DNS subdomain (≤ 253), name ≤ 63 characters
/// of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(format!("label key {key:?}: prefix must be a lowercase DNS subdomain of at most 253 characters"));
    }
    if name.is_empty() || !is_name(name) {
        return Err(format!(
            "label key {key:?}: name must be 1-63 characters of [A-Za-z0-9._-], starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or ≤ 63 characters of `[A-Za-z0-9._-]` starting and ending
/// alphanumeric.
pub fn validate_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        return Ok(());
    }
    Err(format!(
        "label {key:?} value {value:?}: must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric"
    ))
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Well-known keys in the restricted namespaces that kubelet may still set.
const KUBELET_KEYS: [&str; 11] = [
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
];

/// Whether kubelet may set `key` on its Node under NodeRestriction.
pub fn kubelet_may_set(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else { return true };
    let within = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if !within("kubernetes.io") && !within("k8s.io") {
        return true;
    }
    KUBELET_KEYS.contains(&key) || within("kubelet.kubernetes.io") || within("node.kubernetes.io")
}

/// Labels split into (kubelet may set, needs `kubectl label`).
pub fn split(labels: &Labels) -> (Labels, Labels) {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).partition(|(k, _)| kubelet_may_set(k))
}

/// Kubelet's `--node-labels` value: `k=v,k2=v2`.
pub fn flag_value(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A kubeadm (v1beta4) `JoinConfiguration` fragment passing the labels to kubelet.
pub fn join_configuration_yaml(labels: &Labels) -> String {
    format!(
        "# Merge into your kubeadm JoinConfiguration.\napiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n\
         nodeRegistration:\n  kubeletExtraArgs:\n    - name: node-labels\n      value: \"{}\"\n",
        flag_value(labels)
    )
}

/// The command that applies labels kubelet may not set itself.
pub fn kubectl_command(node: &str, labels: &Labels) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let args: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(format!("kubectl label node {node} --overwrite {}", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::gpu;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_gpu_node_gets_gfd_and_nfd_labels_and_its_disk_type() {
        let root = tempfile::tempdir().unwrap();
        gpu::tests::fake_tree(root.path());
        let inv = gpu::discover(root.path()).unwrap();
        let got = discovered(&inv, Some(DiskType::Ssd));
        assert_eq!(
            got,
            labels(&[
                ("disktype", "ssd"),
                ("feature.node.kubernetes.io/pci-10de.present", "true"),
                ("nvidia.com/gpu.count", "2"),
                ("nvidia.com/gpu.present", "true"),
                ("nvidia.com/gpu.product", "Tesla-T4"),
            ])
        );
        validate_all(&got).unwrap();
        assert!(!got.keys().any(|k| k.starts_with("kubernetes.io/")), "kubelet's own labels are not duplicated");
    }

    #[test]
    fn no_gpu_no_gpu_labels_and_config_wins() {
        let got = merge(discovered(&GpuInventory::default(), Some(DiskType::Hdd)), &labels(&[("disktype", "ssd")]));
        assert_eq!(got, labels(&[("disktype", "ssd")]));
    }

    #[test]
    fn flag_and_yaml_forms() {
        let l = labels(&[("disktype", "ssd"), ("nvidia.com/gpu.count", "2")]);
        assert_eq!(flag_value(&l), "disktype=ssd,nvidia.com/gpu.count=2");
        let yaml = join_configuration_yaml(&l);
        assert!(yaml.contains("kind: JoinConfiguration"));
        assert!(yaml.contains("value: \"disktype=ssd,nvidia.com/gpu.count=2\""), "{yaml}");
    }

    #[test]
    fn restricted_keys_go_to_kubectl() {
        let l = labels(&[
            ("disktype", "ssd"),
            ("node-role.kubernetes.io/gpu", ""),
            ("feature.node.kubernetes.io/pci-10de.present", "true"),
            ("node.kubernetes.io/instance-type", "big"),
            ("kubernetes.io/hostname", "n1"),
            ("example.k8s.io/team", "a"),
            ("topology.kubernetes.io/zone", "z1"),
        ]);
        let (kubelet, admin) = split(&l);
        assert_eq!(admin, labels(&[("example.k8s.io/team", "a"), ("node-role.kubernetes.io/gpu", "")]));
        assert_eq!(kubelet.len(), 5);
        assert_eq!(
            kubectl_command("n1", &admin).unwrap(),
            "kubectl label node n1 --overwrite example.k8s.io/team=a node-role.kubernetes.io/gpu="
        );
        assert_eq!(kubectl_command("n1", &Labels::new()), None);
    }

    #[test]
    fn keys_and_values_are_validated() {
        for good in ["disktype", "nvidia.com/gpu.count", "a.b-c/x_y.z", "A1"] {
            validate_key(good).unwrap();
        }
        for bad in ["", "/x", "Upper.com/x", "a/b/c", "-x", "x-", "has space", &"n".repeat(64), "a..b/x"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        validate_value("k", "").unwrap();
        validate_value("k", "Tesla-T4").unwrap();
        for bad in ["a b", "-a", "a=b", &"v".repeat(64)] {
            assert!(validate_value("k", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn free_text_becomes_a_valid_value() {
        assert_eq!(label_value_from("NVIDIA A100-SXM4-40GB"), "NVIDIA-A100-SXM4-40GB");
        assert_eq!(label_value_from(" (weird) name! "), "weird-name");
        let long = label_value_from(&"x ".repeat(80));
        assert!(long.len() <= 63);
        validate_value("k", &long).unwrap();
    }
}
