//! Which webhook destinations are internal: the server's own host, the operator's networks, cloud
//! metadata services and addresses that are not unicast at all. A webhook URL is checked when it
//! is set (its literal host, and what its name resolves to) and again at every delivery, where the
//! webhook client's resolver (`GuardedResolver`) drops internal addresses, so a name that later
//! resolves to 127.0.0.1 (DNS rebinding) is refused before any connection is made.
//!
//! The classifier is pure: IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 addresses are judged
//! by the IPv4 address they carry.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Names that reach cloud metadata services or the host itself, whatever DNS says about them.
const INTERNAL_NAMES: &[&str] = &[
    "localhost",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "kubernetes",
    "kubernetes.default",
];

/// Suffixes of names that only resolve inside a private network (RFC 6761/6762, cloud and
/// cluster DNS).
const INTERNAL_SUFFIXES: &[&str] = &[
    ".localhost",
    ".local",
    ".internal",
    ".localdomain",
    ".home.arpa",
    ".cluster.local",
    ".svc",
];

/// Whether a webhook must not be delivered to `ip`.
pub(crate) fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network" (0.0.0.0/8)
        || (a == 100 && (b & 0xc0) == 64) // carrier-grade NAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18.0.0/15
        || a >= 240 // reserved, 240.0.0.0/4
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_internal_v4(v4);
    }
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64, 64:ff9b:1::/48
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard, 100::/64
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments incl. Teredo, 2001::/23
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, 2001:db8::/32
        || (s[0] & 0xfff0) == 0x3ff0 // documentation, 3fff::/20
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated), ::/96
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(tail);
    }
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Whether a host name is internal by name alone (trailing dots and case ignored).
pub(crate) fn is_internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if !name.contains('.') {
        // A single label ("intranet", "metadata") resolves through the local search domains.
        return true;
    }
    INTERNAL_NAMES.contains(&name.as_str()) || INTERNAL_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether a URL's host is internal as written (an internal literal address or name).
pub(crate) fn is_internal_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            // A domain that is an address in disguise ("127.0.0.1." with its trailing dot).
            let bare = d.trim_end_matches('.');
            match bare.parse::<IpAddr>() {
                Ok(ip) => is_internal_ip(ip),
                Err(_) => is_internal_name(d),
            }
        }
        url::Host::Ipv4(ip) => is_internal_v4(*ip),
        url::Host::Ipv6(ip) => is_internal_v6(*ip),
    }
}

/// Why a webhook destination was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AddressError {
    #[error("{0} resolves only to internal addresses")]
    Internal(String),
    #[error("{0} is an internal address")]
    InternalAddress(String),
    #[error("{0} is an internal host name")]
    InternalName(String),
    #[error("cannot resolve {0}")]
    Unresolved(String),
}

/// The webhook client's DNS resolver: resolves (or takes `overrides`, like curl's `--resolve`),
/// then drops internal addresses unless `allow_internal`. No address left is an error, so the
/// client never connects to one.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuardedResolver {
    pub allow_internal: bool,
    pub overrides: Arc<BTreeMap<String, Vec<IpAddr>>>,
}

impl GuardedResolver {
    pub fn new(allow_internal: bool, overrides: BTreeMap<String, Vec<IpAddr>>) -> GuardedResolver {
        let overrides = overrides
            .into_iter()
            .map(|(k, v)| (k.trim_end_matches('.').to_ascii_lowercase(), v))
            .collect();
        GuardedResolver {
            allow_internal,
            overrides: Arc::new(overrides),
        }
    }

    /// The addresses a delivery to `name` may use.
    pub(crate) async fn resolve_allowed(&self, name: &str) -> Result<Vec<IpAddr>, AddressError> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.allow_internal && is_internal_name(&key) {
            return Err(AddressError::InternalName(key));
        }
        let all: Vec<IpAddr> = match self.overrides.get(&key) {
            Some(addrs) => addrs.clone(),
            None => tokio::net::lookup_host((key.as_str(), 0))
                .await
                .map_err(|_| AddressError::Unresolved(key.clone()))?
                .map(|a| a.ip())
                .collect(),
        };
        if all.is_empty() {
            return Err(AddressError::Unresolved(key));
        }
        let allowed: Vec<IpAddr> = all
            .into_iter()
            .filter(|ip| self.allow_internal || !is_internal_ip(*ip))
            .collect();
        if allowed.is_empty() {
            return Err(AddressError::Internal(key));
        }
        Ok(allowed)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addrs = this.resolve_allowed(&name).await.map_err(|e| {
                // Logged without the name: it may identify the relying party's infrastructure.
                tracing::warn!("webhook destination refused: internal or unresolvable address");
                Box::new(e) as Box<dyn std::error::Error + Send + Sync>
            })?;
            let iter = addrs.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(iter) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(url: &str) -> bool {
        let u = url::Url::parse(url).unwrap();
        is_internal_host(&u.host().unwrap())
    }

    #[test]
    fn every_internal_literal_is_refused() {
        for url in [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://0x7f000001/",
            "https://2130706433/",
            "https://0.0.0.0/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/",
            "https://100.127.255.254/",
            "https://224.0.0.1/",
            "https://239.255.255.250/",
            "https://255.255.255.255/",
            "https://240.0.0.1/",
            "https://192.0.2.1/",
            "https://198.51.100.7/",
            "https://203.0.113.9/",
            "https://198.18.0.1/",
            "https://192.0.0.170/",
            "https://[::1]/",
            "https://[::]/",
            "https://[::ffff:127.0.0.1]:8443/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::127.0.0.1]/",
            "https://[64:ff9b::7f00:1]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[64:ff9b:1::8.8.8.8]/",
            "https://[2002:7f00:1::]/",
            "https://[2002:a9fe:a9fe::1]/",
            "https://[fc00::1]/",
            "https://[fd12:3456::1]/",
            "https://[fe80::1]/",
            "https://[fec0::1]/",
            "https://[ff02::1]/",
            "https://[2001:db8::1]/",
            "https://[2001::1]/",
            "https://[100::1]/",
            "https://[3fff::1]/",
            "https://localhost/",
            "https://localhost./",
            "https://LOCALHOST/",
            "https://api.localhost/",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://metadata.google.internal./",
            "https://metadata/",
            "https://instance-data/",
            "https://printer.local/",
            "https://db.svc/",
            "https://web.default.svc.cluster.local/",
            "https://intranet/",
        ] {
            assert!(host_of(url), "{url} must be internal");
        }
    }

    #[test]
    fn public_destinations_pass() {
        for url in [
            "https://wallet.example/hook",
            "https://hooks.wallet.example./hook",
            "https://8.8.8.8/",
            "https://1.1.1.1/",
            "https://100.128.0.1/",
            "https://100.63.255.255/",
            "https://172.32.0.1/",
            "https://[2606:4700::1111]/",
            "https://[::ffff:8.8.8.8]/",
            "https://[64:ff9b::808:808]/",
            "https://[2002:808:808::1]/",
        ] {
            assert!(!host_of(url), "{url} must be allowed");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_internal_answers() {
        let overrides = BTreeMap::from([
            (
                "rebind.example".to_string(),
                vec!["127.0.0.1".parse().unwrap()],
            ),
            (
                "mixed.example".to_string(),
                vec!["10.0.0.1".parse().unwrap(), "8.8.8.8".parse().unwrap()],
            ),
        ]);
        let guard = GuardedResolver::new(false, overrides.clone());
        assert!(matches!(
            guard.resolve_allowed("rebind.example.").await,
            Err(AddressError::Internal(_))
        ));
        assert_eq!(
            guard.resolve_allowed("MIXED.example").await.unwrap(),
            vec!["8.8.8.8".parse::<IpAddr>().unwrap()]
        );
        assert!(matches!(
            guard.resolve_allowed("localhost.").await,
            Err(AddressError::InternalName(_))
        ));
        let lab = GuardedResolver::new(true, overrides);
        assert_eq!(
            lab.resolve_allowed("rebind.example").await.unwrap(),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }
}
