//! The TCP sockets in LISTEN state on this machine, with their ports and
//! inodes: asked of the kernel through netlink's `sock_diag`, which walks
//! only the listening sockets. `/proc/net/tcp` gives the same, but reading
//! it walks every connection slot on the machine (the largest item in a
//! profile of sampling), so it is only the fallback where netlink is refused.

use std::collections::HashMap;
use std::fs;

use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink, recv, send, socket_with,
};

/// A listening socket: its port and the uid that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listener {
    pub(crate) port: u16,
    pub(crate) uid: u32,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const IPPROTO_TCP: u8 = 6;

/// A dump request for the family's listening TCP sockets: an `nlmsghdr`
/// followed by an `inet_diag_req_v2`, in the machine's byte order.
fn request(family: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    m.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.resize(72, 0); // inet_diag_sockid: any address, any port
    m
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads one family's answer into `out`; `None` when netlink failed.
fn dump(family: u8, out: &mut HashMap<u64, Listener>) -> Option<()> {
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )
    .ok()?;
    send(&fd, &request(family), SendFlags::empty()).ok()?;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = recv(&fd, &mut buf[..], RecvFlags::empty()).ok()?.0;
        if n == 0 {
            return None;
        }
        let mut at = 0;
        while at + 16 <= n {
            let len = u32_ne(&buf, at)? as usize;
            let kind = u16_ne(&buf, at + 4)?;
            if len < 16 || at + len > n {
                return None;
            }
            match kind {
                NLMSG_DONE => return Some(()),
                NLMSG_ERROR => return None,
                _ => {
                    // inet_diag_msg: the source port (network order) at 4,
                    // the uid at 64, the inode at 68.
                    let msg = &buf[at + 16..at + len];
                    let port = msg.get(4..6).map(|p| u16::from_be_bytes([p[0], p[1]]));
                    if let (Some(port), Some(uid), Some(inode)) =
                        (port, u32_ne(msg, 64), u32_ne(msg, 68))
                    {
                        out.insert(u64::from(inode), Listener { port, uid });
                    }
                }
            }
            at += (len + 3) & !3;
        }
    }
}

/// From `/proc/net/tcp{,6}`, where netlink is not to be had.
fn from_proc(out: &mut HashMap<u64, Listener>) {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... uid (7) timeout inode (9); 0A is LISTEN.
            if f.get(3) != Some(&"0A") {
                continue;
            }
            let port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let uid = f.get(7).and_then(|u| u.parse().ok());
            let inode = f.get(9).and_then(|i| i.parse::<u64>().ok());
            if let (Some(port), Some(uid), Some(inode)) = (port, uid, inode) {
                out.insert(inode, Listener { port, uid });
            }
        }
    }
}

/// Every listening TCP socket (IPv4 and IPv6), by inode.
pub(crate) fn listeners() -> HashMap<u64, Listener> {
    let mut out = HashMap::new();
    let via_netlink = dump(2, &mut out).and_then(|()| dump(10, &mut out));
    if via_netlink.is_none() {
        out.clear();
        from_proc(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_and_proc_agree_on_a_listener() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        let uid = rustix::process::getuid().as_raw();
        let mut via_netlink = HashMap::new();
        dump(2, &mut via_netlink).expect("netlink answers");
        let mut via_proc = HashMap::new();
        from_proc(&mut via_proc);
        let ours = |m: &HashMap<u64, Listener>| {
            m.iter()
                .find(|(_, l)| l.port == port)
                .map(|(inode, l)| (*inode, *l))
        };
        let (inode, listener) = ours(&via_netlink).expect("netlink lists it");
        assert_eq!(listener.uid, uid);
        assert_eq!(ours(&via_proc), Some((inode, listener)));
        assert!(listeners().contains_key(&inode));
    }
}
