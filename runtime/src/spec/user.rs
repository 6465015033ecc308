//! Who the container's first process runs as: CRI's `run_as_user` / `run_as_username` /
//! `run_as_group` / supplemental groups, else the image's `User`, resolved against the
//! image's own `/etc/passwd` and `/etc/group` the way kubelet expects:
//!
//! - a username that is not in `/etc/passwd` is an `InvalidArgument` error;
//! - a numeric uid needs no passwd entry (its gid is then 0, as with runc and containerd);
//! - the gid defaults to the user's primary group;
//! - additional gids: the final gid, the groups in `/etc/group` that list the user (unless
//!   the supplemental groups policy is `Strict`), then `supplemental_groups`.
//!
//! The two files are opened inside the rootfs with libpathrs, so a symlink in the image
//! (`/etc/passwd -> /host/etc/shadow`) resolves inside the rootfs and never reaches the host.

use std::io::Read;
use std::path::Path;

use cri_proto::v1;

use crate::{Error, Result};

/// An image's `/etc/passwd` or `/etc/group` larger than this is refused, not read whole.
const MAX_FILE: u64 = 16 << 20;

/// The user the container runs as, ready for `process.user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Always starts with `gid`: libcontainer keeps the monitor's groups when this is empty.
    pub additional_gids: Vec<u32>,
    /// `HOME` when the environment sets none: the passwd entry's, else `/` (as runc does).
    pub home: String,
}

/// What asks for a user: the CRI security context and the image config's `User`.
#[derive(Debug, Clone, Default)]
pub struct UserRequest<'a> {
    pub run_as_user: Option<i64>,
    pub run_as_username: &'a str,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: &'a [i64],
    /// `SupplementalGroupsPolicy::Strict`: ignore `/etc/group` memberships.
    pub strict_groups: bool,
    /// The image config's `User` field: `""`, `name`, `uid`, `name:group`, `uid:gid`, ...
    pub image_user: &'a str,
}

impl<'a> UserRequest<'a> {
    pub fn from_cri(sc: &'a v1::LinuxContainerSecurityContext, image_user: &'a str) -> UserRequest<'a> {
        UserRequest {
            run_as_user: sc.run_as_user.as_ref().map(|v| v.value),
            run_as_username: &sc.run_as_username,
            run_as_group: sc.run_as_group.as_ref().map(|v| v.value),
            supplemental_groups: &sc.supplemental_groups,
            strict_groups: sc.supplemental_groups_policy == v1::SupplementalGroupsPolicy::Strict as i32,
            image_user,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves the request against the rootfs's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(rootfs: &Path, request: &UserRequest<'_>) -> Result<ResolvedUser> {
    let passwd = parse_passwd(&read_in_root(rootfs, "etc/passwd")?.unwrap_or_default());
    let groups = parse_group(&read_in_root(rootfs, "etc/group")?.unwrap_or_default());
    resolve_with(&passwd, &groups, request)
}

fn resolve_with(passwd: &[PasswdEntry], groups: &[GroupEntry], request: &UserRequest<'_>) -> Result<ResolvedUser> {
    let (uid, mut gid, entry) = primary(passwd, groups, request)?;
    if let Some(group) = request.run_as_group {
        if request.run_as_user.is_none() && request.run_as_username.is_empty() {
            return Err(Error::InvalidArgument(
                "run_as_group is set without run_as_user or run_as_username".into(),
            ));
        }
        gid = id_from_i64(group, "run_as_group")?;
    }
    let mut additional = vec![gid];
    if let (Some(entry), false) = (entry, request.strict_groups) {
        let memberships = groups.iter().filter(|g| g.members.contains(&entry.name)).map(|g| g.gid);
        additional.extend(memberships);
    }
    for &group in request.supplemental_groups {
        additional.push(id_from_i64(group, "supplemental_groups")?);
    }
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));
    let home = entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()).unwrap_or_else(|| "/".into());
    Ok(ResolvedUser { uid, gid, additional_gids: additional, home })
}

/// uid, gid and passwd entry before `run_as_group` is applied.
fn primary<'p>(
    passwd: &'p [PasswdEntry],
    groups: &[GroupEntry],
    request: &UserRequest<'_>,
) -> Result<(u32, u32, Option<&'p PasswdEntry>)> {
    if let Some(uid) = request.run_as_user {
        let uid = id_from_i64(uid, "run_as_user")?;
        let entry = passwd.iter().find(|e| e.uid == uid);
        return Ok((uid, entry.map_or(0, |e| e.gid), entry));
    }
    if !request.run_as_username.is_empty() {
        let name = request.run_as_username;
        let entry = by_name(passwd, name).ok_or_else(|| {
            Error::InvalidArgument(format!("run_as_username {name:?} is not in the image's /etc/passwd"))
        })?;
        return Ok((entry.uid, entry.gid, Some(entry)));
    }
    image_user(passwd, groups, request.image_user)
}

/// The image's `User`: `user[:group]`, each part a name or a number; empty means root.
fn image_user<'p>(
    passwd: &'p [PasswdEntry],
    groups: &[GroupEntry],
    spec: &str,
) -> Result<(u32, u32, Option<&'p PasswdEntry>)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let (uid, mut gid, entry) = match user.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd.iter().find(|e| e.uid == uid);
            (uid, entry.map_or(0, |e| e.gid), entry)
        }
        Err(_) => {
            let entry = by_name(passwd, user).ok_or_else(|| {
                Error::InvalidArgument(format!("image user {user:?} is not in the image's /etc/passwd"))
            })?;
            (entry.uid, entry.gid, Some(entry))
        }
    };
    if let Some(group) = group.filter(|g| !g.is_empty()) {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups.iter().find(|g| g.name == group).map(|g| g.gid).ok_or_else(|| {
                Error::InvalidArgument(format!("image group {group:?} is not in the image's /etc/group"))
            })?,
        };
    }
    Ok((uid, gid, entry))
}

fn by_name<'p>(passwd: &'p [PasswdEntry], name: &str) -> Option<&'p PasswdEntry> {
    passwd.iter().find(|e| e.name == name)
}

/// CRI ids are int64; Linux ids are u32 and `-1` (u32::MAX) means "no change" to setresuid.
fn id_from_i64(value: i64, field: &str) -> Result<u32> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| Error::InvalidArgument(format!("{field} {value} is not a valid Linux id")))
}

/// Reads `rel` inside `rootfs`, resolving symlinks as if `rootfs` were `/`. A missing file is
/// `None`: many images (scratch, distroless) have no `/etc/passwd` at all.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>> {
    let root = pathrs::Root::open(rootfs)
        .map_err(|e| Error::Internal(format!("cannot open rootfs {}: {e}", rootfs.display())))?;
    let file = match root.open_subpath(rel, pathrs::flags::OpenFlags::O_RDONLY) {
        Ok(f) => f,
        Err(e) if matches!(e.kind(), pathrs::error::ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))) => {
            return Ok(None);
        }
        Err(e) => {
            return Err(Error::Internal(format!("cannot open /{rel} in rootfs {}: {e}", rootfs.display())));
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io("cannot read", rootfs.join(rel)))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(Error::InvalidArgument(format!("the image's /{rel} is larger than {MAX_FILE} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines and NIS `+`/`-` entries are skipped.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() || f[0].starts_with(['#', '+', '-']) {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// `name:password:gid:member,member`.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() || f[0].starts_with(['#', '+', '-']) {
                return None;
            }
            let members = f.get(3).map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect());
            Some(GroupEntry { name: f[0].to_string(), gid: f[2].trim().parse().ok()?, members: members.unwrap_or_default() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n\
        broken:x:notanumber:1\n\
        +nis::::::\n\
        nobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nwheel:x:10:root,app\naudio:x:29: app , other\nstaff:x:50:other\n";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    fn resolve(dir: &tempfile::TempDir, request: UserRequest<'_>) -> Result<ResolvedUser> {
        resolve_user(dir.path(), &request)
    }

    #[test]
    fn empty_image_user_is_root_with_its_groups() {
        let dir = rootfs();
        let user = resolve(&dir, UserRequest::default()).unwrap();
        assert_eq!(user, ResolvedUser { uid: 0, gid: 0, additional_gids: vec![0, 10], home: "/root".into() });
    }

    #[test]
    fn image_user_by_name_gets_primary_and_member_groups() {
        let dir = rootfs();
        let user = resolve(&dir, UserRequest { image_user: "app", ..Default::default() }).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1001));
        assert_eq!(user.additional_gids, vec![1001, 10, 29]);
        assert_eq!(user.home, "/home/app");
    }

    #[test]
    fn image_user_forms_with_groups() {
        let dir = rootfs();
        let user = resolve(&dir, UserRequest { image_user: "app:staff", ..Default::default() }).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 50));
        assert_eq!(user.additional_gids, vec![50, 10, 29]);
        let user = resolve(&dir, UserRequest { image_user: "1000:7", ..Default::default() }).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 7));
        // A uid unknown to passwd: gid 0, no memberships, HOME=/.
        let user = resolve(&dir, UserRequest { image_user: "4242", ..Default::default() }).unwrap();
        assert_eq!(user, ResolvedUser { uid: 4242, gid: 0, additional_gids: vec![0], home: "/".into() });
        assert!(matches!(
            resolve(&dir, UserRequest { image_user: "ghost", ..Default::default() }),
            Err(Error::InvalidArgument(m)) if m.contains("ghost")
        ));
        assert!(matches!(
            resolve(&dir, UserRequest { image_user: "app:ghosts", ..Default::default() }),
            Err(Error::InvalidArgument(m)) if m.contains("ghosts")
        ));
    }

    #[test]
    fn run_as_user_overrides_the_image_and_finds_its_passwd_entry() {
        let dir = rootfs();
        let request = UserRequest { run_as_user: Some(1000), image_user: "nobody", ..Default::default() };
        let user = resolve(&dir, request).unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (1000, 1001, "/home/app"));
        let request = UserRequest { run_as_user: Some(-5), ..Default::default() };
        assert!(matches!(resolve(&dir, request), Err(Error::InvalidArgument(m)) if m.contains("run_as_user")));
        let request = UserRequest { run_as_user: Some(1 << 40), ..Default::default() };
        assert!(resolve(&dir, request).is_err());
    }

    #[test]
    fn run_as_username_must_exist() {
        let dir = rootfs();
        let user = resolve(&dir, UserRequest { run_as_username: "app", ..Default::default() }).unwrap();
        assert_eq!(user.uid, 1000);
        assert!(matches!(
            resolve(&dir, UserRequest { run_as_username: "mallory", ..Default::default() }),
            Err(Error::InvalidArgument(m)) if m.contains("mallory")
        ));
    }

    #[test]
    fn run_as_group_and_supplemental_groups() {
        let dir = rootfs();
        let request = UserRequest {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            supplemental_groups: &[4000, 10, 4000],
            ..Default::default()
        };
        let user = resolve(&dir, request).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 3000));
        assert_eq!(user.additional_gids, vec![3000, 10, 29, 4000]);
        let strict = UserRequest { run_as_user: Some(1000), supplemental_groups: &[4000], strict_groups: true, ..Default::default() };
        assert_eq!(resolve(&dir, strict).unwrap().additional_gids, vec![1001, 4000]);
        let orphan_group = UserRequest { run_as_group: Some(3000), image_user: "app", ..Default::default() };
        assert!(matches!(resolve(&dir, orphan_group), Err(Error::InvalidArgument(m)) if m.contains("run_as_group")));
    }

    #[test]
    fn an_image_without_passwd_still_runs_numeric_users() {
        let dir = tempfile::tempdir().unwrap();
        let user = resolve(&dir, UserRequest { image_user: "65532:65532", ..Default::default() }).unwrap();
        assert_eq!(user, ResolvedUser { uid: 65532, gid: 65532, additional_gids: vec![65532], home: "/".into() });
        assert!(resolve(&dir, UserRequest { run_as_username: "app", ..Default::default() }).is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        // /etc/passwd -> /outside/passwd must mean <rootfs>/outside/passwd, never the host's.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let target = outside.path().join("passwd");
        std::os::unix::fs::symlink(&target, dir.path().join("etc/passwd")).unwrap();
        assert!(resolve(&dir, UserRequest { run_as_username: "evil", ..Default::default() }).is_err());
        // The same absolute target inside the rootfs is what is read.
        let inner = dir.path().join(target.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inner.parent().unwrap()).unwrap();
        std::fs::write(&inner, "inner:x:7:7::/in:/bin/sh\n").unwrap();
        let user = resolve(&dir, UserRequest { run_as_username: "inner", ..Default::default() }).unwrap();
        assert_eq!((user.uid, user.home.as_str()), (7, "/in"));
        // `..` cannot climb out either: it stops at the rootfs.
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        let climbing = format!("{}{}", "../".repeat(20), target.display());
        std::os::unix::fs::symlink(&climbing, dir.path().join("etc/passwd")).unwrap();
        assert!(resolve(&dir, UserRequest { run_as_username: "evil", ..Default::default() }).is_err());
        assert!(resolve(&dir, UserRequest { run_as_username: "inner", ..Default::default() }).is_ok());
    }
}
