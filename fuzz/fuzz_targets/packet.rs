//! The datapath's handling of inner packets, on arbitrary bytes: the `virtio_net_hdr`
//! the TUN interface puts in front of a packet, TCP segmentation of super-packets, the
//! destination classification that picks a peer, and TCP coalescing on the way back.
//! A peer or a local process controls these bytes; none of them may crash the gateway.
#![no_main]

use boringtun::noise::Tunn;
use causeway_datapath::cidr::CidrMap;
use causeway_datapath::offload::{segment, Coalescer, VnetHdr, MAX_PACKET, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn peers() -> &'static CidrMap<u8> {
    static PEERS: OnceLock<CidrMap<u8>> = OnceLock::new();
    PEERS.get_or_init(|| {
        CidrMap::new(
            ["10.2.0.0/16", "10.2.1.0/24", "fd00:2::/48", "0.0.0.0/0"]
                .iter()
                .enumerate()
                .map(|(i, n)| (n.parse().expect("literal CIDR"), i as u8)),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the mode, so one corpus explores both directions.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // TUN -> tunnel: a vnet header, then a (super-)packet cut into segments in place.
        let Some(hdr) = VnetHdr::decode(rest) else {
            return;
        };
        let mut packet = rest[VNET_HDR_LEN..].to_vec();
        packet.truncate(MAX_PACKET);
        let mut coalescer = Coalescer::new();
        let mut emitted = 0usize;
        let result = segment(&hdr, &mut packet, |seg| {
            if let Some(dst) = Tunn::dst_address(seg) {
                let _ = peers().lookup(dst);
            }
            // What one gateway segments, the other coalesces.
            coalescer.push(seg, &mut |out| {
                assert!(out.len() >= VNET_HDR_LEN);
                assert!(VnetHdr::decode(out).is_some());
                emitted += 1;
            });
        });
        coalescer.flush(&mut |_| emitted += 1);
        if let Ok(segments) = result {
            assert!(segments >= 1);
            assert!(emitted >= 1 && emitted <= segments);
        }
    } else {
        // Tunnel -> TUN: decrypted packets, 2-byte length-prefixed, through the coalescer.
        let mut coalescer = Coalescer::new();
        let (mut pushed, mut emitted) = (0usize, 0usize);
        let mut input = rest;
        while input.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([input[0], input[1]])).min(input.len() - 2);
            let (packet, tail) = input[2..].split_at(len);
            input = tail;
            if let Some(dst) = Tunn::dst_address(packet) {
                let _ = peers().lookup(dst);
            }
            pushed += 1;
            coalescer.push(packet, &mut |out| {
                assert!(out.len() >= VNET_HDR_LEN);
                emitted += 1;
            });
        }
        coalescer.flush(&mut |_| emitted += 1);
        // Every packet leaves exactly once, merged or alone.
        assert!(emitted <= pushed);
        assert!(pushed == 0 || emitted >= 1);
    }
});
