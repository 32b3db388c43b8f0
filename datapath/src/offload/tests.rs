use super::*;

/// Segments a packet and keeps copies of the segments (the real caller encrypts in place).
fn split(hdr: &VnetHdr, packet: &mut [u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut out = Vec::new();
    let n = segment(hdr, packet, |seg| out.push(seg.to_vec()))?;
    assert_eq!(n, out.len());
    Ok(out)
}

/// RFC 1071 checksum, the slow obvious way, to check the fast one against.
fn reference_sum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn reference_tcp_ok(pkt: &[u8]) -> bool {
    let v6 = pkt[0] >> 4 == 6;
    let l4 = if v6 {
        40
    } else {
        usize::from(pkt[0] & 0x0f) * 4
    };
    let len = pkt.len() - l4;
    let mut pseudo = Vec::new();
    if v6 {
        pseudo.extend_from_slice(&pkt[8..40]);
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
    } else {
        pseudo.extend_from_slice(&pkt[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    }
    pseudo.extend_from_slice(&pkt[l4..]);
    reference_sum(&pseudo) == 0xffff
}

fn reference_ipv4_ok(pkt: &[u8]) -> bool {
    reference_sum(&pkt[..20]) == 0xffff
}

/// Writes the IPv4 header every test packet has (10.1.1.10 to 10.2.1.10, TCP, DF, the
/// whole of `p` long) over `p[..ihl]`, options beyond 20 bytes as NOPs, with its checksum.
fn write_ipv4_header(p: &mut [u8], ihl: usize) {
    let total = p.len();
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 1, 1, 10]);
    p[16..20].copy_from_slice(&[10, 2, 1, 10]);
    p[20..ihl].fill(1);
    let sum = ipv4_header_checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
}

const OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]; // NOP NOP timestamps

/// A TCP packet with timestamps, valid checksums, and `payload`.
fn tcp(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let l4 = if v6 { 40 } else { 20 };
    let headers = l4 + 20 + OPTS.len();
    let mut p = vec![0u8; headers + payload.len()];
    let total = p.len();
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&"fd00:1::10".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00:2::10".parse::<std::net::Ipv6Addr>().unwrap().octets());
    } else {
        write_ipv4_header(&mut p, l4);
    }
    p[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[l4 + 2..l4 + 4].copy_from_slice(&5432u16.to_be_bytes());
    p[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    p[l4 + 8..l4 + 12].copy_from_slice(&777u32.to_be_bytes());
    p[l4 + 12] = ((20 + OPTS.len()) as u8 / 4) << 4;
    p[l4 + 13] = flags;
    p[l4 + 14..l4 + 16].copy_from_slice(&512u16.to_be_bytes());
    p[l4 + 20..headers].copy_from_slice(&OPTS);
    p[headers..].copy_from_slice(payload);
    let sum = checksum_add(&p[l4..], pseudo_header(&p, v6, 6, p.len() - l4));
    p[l4 + 16..l4 + 18].copy_from_slice(&(!fold(sum)).to_be_bytes());
    assert!(reference_tcp_ok(&p), "test packet builder is wrong");
    p
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn seq_of(p: &[u8]) -> u32 {
    let l4 = if p[0] >> 4 == 6 { 40 } else { 20 };
    u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]])
}

fn flags_of(p: &[u8]) -> u8 {
    let l4 = if p[0] >> 4 == 6 { 40 } else { 20 };
    p[l4 + 13]
}

const HEADERS_V4: usize = 20 + 32;
const HEADERS_V6: usize = 40 + 32;

/// A TSO super-packet as the kernel hands it over: pseudo-header sum in the checksum field.
fn super_packet(v6: bool, flags: u8, data: &[u8], mss: u16) -> (VnetHdr, Vec<u8>) {
    let mut p = tcp(v6, 1000, flags, data);
    let l4 = if v6 { 40 } else { 20 };
    let partial = fold(pseudo_header(&p, v6, 6, p.len() - l4));
    p[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: (l4 + 32) as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (hdr, p)
}

#[test]
fn checksum_matches_the_reference_on_odd_and_even_lengths() {
    for len in [0usize, 1, 2, 3, 7, 8, 9, 1499, 1500, 65_535] {
        let data = payload(len);
        let fast = fold(checksum_add(&data, 0));
        let slow = reference_sum(&data) as u16;
        assert_eq!(fast, slow, "length {len}");
    }
}

#[test]
fn checksum_matches_the_reference_at_every_length_and_carry() {
    // All-ones words carry on every add (and, 64 KiB of them, fill the lanes most); the
    // byte pattern makes every alignment differ.
    let ones = vec![0xffu8; 65_535];
    let pattern: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for data in [&ones[..], &pattern[..]] {
        for len in 0..data.len().min(200) {
            let d = &data[..len];
            assert_eq!(
                fold(checksum_add(d, 0)),
                reference_sum(d) as u16,
                "length {len}"
            );
        }
        let fast = fold(checksum_add(data, 0x1_2345));
        let slow = fold(u64::from(reference_sum(data) as u16) + 0x1_2345);
        assert_eq!(fast, slow, "with an initial sum, length {}", data.len());
    }
}

#[test]
fn vnet_header_round_trips() {
    let hdr = VnetHdr {
        flags: 1,
        gso_type: 4,
        hdr_len: 72,
        gso_size: 1368,
        csum_start: 40,
        csum_offset: 16,
    };
    let mut buf = [0u8; VNET_HDR_LEN];
    hdr.encode(&mut buf);
    assert_eq!(VnetHdr::decode(&buf), Some(hdr));
    assert_eq!(VnetHdr::decode(&buf[..9]), None);
}

#[test]
fn tso_super_packets_split_into_valid_segments_v4_and_v6() {
    for v6 in [false, true] {
        let headers = if v6 { HEADERS_V6 } else { HEADERS_V4 };
        let data = payload(10_000);
        let mss = 1368u16;
        let (hdr, mut sp) = super_packet(v6, TCP_ACK | TCP_PSH | TCP_CWR, &data, mss);
        let segs = split(&hdr, &mut sp).unwrap();
        assert_eq!(segs.len(), 10_000usize.div_ceil(1368), "v6={v6}");
        let mut joined = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let len = &seg.len();
            assert!(
                reference_tcp_ok(seg),
                "v6={v6} segment {i}: bad TCP checksum"
            );
            if !v6 {
                assert!(reference_ipv4_ok(seg), "segment {i}: bad IPv4 checksum");
                assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), *len);
                assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 0x1234 + i as u16);
            } else {
                assert_eq!(usize::from(u16::from_be_bytes([seg[4], seg[5]])), len - 40);
            }
            assert_eq!(seq_of(seg), 1000 + (i * 1368) as u32);
            let last = i + 1 == segs.len();
            assert_eq!(flags_of(seg) & TCP_PSH != 0, last, "PSH only on the last");
            assert_eq!(
                flags_of(seg) & TCP_CWR != 0,
                i == 0,
                "CWR only on the first"
            );
            assert!(!last || *len == headers + 10_000 % 1368);
            joined.extend_from_slice(&seg[headers..]);
        }
        assert_eq!(joined, data, "v6={v6}: payload reassembles");
    }
}

#[test]
fn a_partial_checksum_without_gso_is_completed() {
    let (mut hdr, mut p) = super_packet(false, TCP_ACK, &payload(300), 1400);
    hdr.gso_type = GSO_NONE;
    let len = p.len();
    let segs = split(&hdr, &mut p).unwrap();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].len(), len);
    assert!(reference_tcp_ok(&segs[0]));
}

#[test]
fn malformed_offload_headers_are_refused_not_panicked_on() {
    let (hdr, p) = super_packet(false, TCP_ACK, &payload(3000), 1400);
    let cases = [
        VnetHdr {
            csum_start: 60_000,
            ..hdr
        },
        VnetHdr { gso_size: 0, ..hdr },
        VnetHdr { gso_type: 3, ..hdr },
    ];
    for bad in cases {
        let mut pkt = p.clone();
        assert!(split(&bad, &mut pkt).is_err(), "{bad:?}");
    }
    let mut short = p[..30].to_vec();
    assert!(split(&hdr, &mut short).is_err());
    // Headers claiming more than the packet holds.
    let mut lying = p.clone();
    lying[20 + 12] = 0xf0;
    lying.truncate(70);
    assert!(split(&hdr, &mut lying).is_err());
}

fn coalesce(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut c = Coalescer::new();
    let mut out = Vec::new();
    for p in packets {
        c.push(p, &mut |b: &[u8]| out.push(b.to_vec()));
    }
    c.flush(&mut |b: &[u8]| out.push(b.to_vec()));
    out
}

fn segments(v6: bool, count: usize, mss: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let flags = if i + 1 == count {
                TCP_ACK | TCP_PSH
            } else {
                TCP_ACK
            };
            let data = payload(mss)
                .iter()
                .map(|b| b.wrapping_add(i as u8))
                .collect::<Vec<_>>();
            tcp(v6, 1000 + (i * mss) as u32, flags, &data)
        })
        .collect()
}

#[test]
fn consecutive_segments_coalesce_and_split_back_to_the_same_segments() {
    for v6 in [false, true] {
        let segs = segments(v6, 20, 1368);
        let out = coalesce(&segs);
        assert_eq!(out.len(), 1, "v6={v6}: one super-packet");
        let hdr = VnetHdr::decode(&out[0]).unwrap();
        assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(hdr.gso_size, 1368);
        assert_eq!(hdr.flags, F_NEEDS_CSUM);
        // What the kernel would do with it: split it again; the segments must match.
        let mut sp = out[0][VNET_HDR_LEN..].to_vec();
        let back = split(&hdr, &mut sp).unwrap();
        assert_eq!(back.len(), 20);
        for (i, seg) in segs.iter().enumerate() {
            let got = &back[i];
            // IPv4 IDs are rewritten on split; everything else must be identical.
            let (mut a, mut b) = (seg.clone(), got.to_vec());
            if !v6 {
                for p in [&mut a, &mut b] {
                    p[4..6].fill(0);
                    p[10..12].fill(0);
                }
            }
            assert_eq!(a, b, "v6={v6} segment {i}");
        }
    }
}

#[test]
fn a_short_last_segment_joins_but_nothing_follows_it() {
    let mut segs = segments(false, 3, 1000);
    segs[2] = tcp(false, 3000, TCP_ACK, &payload(10));
    segs.push(tcp(false, 3010, TCP_ACK, &payload(1000)));
    let out = coalesce(&segs);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].len(), VNET_HDR_LEN + HEADERS_V4 + 2010);
}

#[test]
fn coalescing_stops_where_the_kernel_would() {
    let base = segments(false, 4, 1000);
    let mut gap = base.clone();
    gap[2] = tcp(false, 1000 + 2 * 1000 + 1, TCP_ACK, &payload(1000));
    let mut psh_mid = base.clone();
    psh_mid[1] = tcp(false, 2000, TCP_ACK | TCP_PSH, &payload(1000));
    let mut syn = base.clone();
    syn[2] = tcp(false, 3000, TCP_ACK | 0x02, &payload(1000));
    let mut corrupt = base.clone();
    let last = corrupt[2].len() - 1;
    corrupt[2][last] ^= 0xff;
    let mut other_flow = base.clone();
    other_flow[2][20] ^= 1; // source port
    let mut window = base.clone();
    window[2][34] ^= 1;
    let mut udp = base.clone();
    udp[2] = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 1, 10, 10, 2, 1, 10, 0, 1, 0, 2, 0, 8, 0,
        0,
    ];
    let cases: [(&str, &Vec<Vec<u8>>, usize); 8] = [
        ("in order", &base, 1),
        ("sequence gap", &gap, 3),
        ("PSH in the middle", &psh_mid, 2),
        ("SYN", &syn, 3),
        ("bad checksum", &corrupt, 3),
        ("other flow", &other_flow, 3),
        ("window change", &window, 3),
        ("not TCP", &udp, 3),
    ];
    for (what, segs, want) in cases {
        let out = coalesce(segs);
        assert_eq!(out.len(), want, "{what}");
        // Every byte of every packet comes out, once, in order.
        let total_in: usize = segs.iter().map(|s| s.len()).sum();
        let headers = out
            .iter()
            .filter(|o| VnetHdr::decode(o).unwrap().gso_type != 0)
            .count();
        let total_out: usize = out.iter().map(|o| o.len() - VNET_HDR_LEN).sum();
        let merged = segs.len() - out.len();
        assert_eq!(
            total_out + merged * HEADERS_V4,
            total_in,
            "{what}: bytes conserved ({headers} merged outputs)"
        );
    }
}

#[test]
fn a_super_packet_never_exceeds_the_ip_length_limit() {
    let segs = segments(false, 60, 1400);
    let out = coalesce(&segs);
    assert!(out.len() >= 2);
    for o in &out {
        assert!(o.len() - VNET_HDR_LEN <= MAX_PACKET);
    }
}

/// Recomputes the IPv4 header and TCP checksums after a test edited a packet's fields, so
/// that the edit, not a bad checksum, is what the code under test sees.
fn reseal(p: &mut [u8]) {
    let v6 = p[0] >> 4 == 6;
    let l4 = if v6 { 40 } else { 20 };
    if !v6 {
        p[10..12].fill(0);
        let sum = ipv4_header_checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    p[l4 + 16..l4 + 18].fill(0);
    let sum = checksum_add(&p[l4..], pseudo_header(p, v6, 6, p.len() - l4));
    p[l4 + 16..l4 + 18].copy_from_slice(&(!fold(sum)).to_be_bytes());
    assert!(reference_tcp_ok(p) && (v6 || reference_ipv4_ok(p)));
}

#[test]
fn segments_differing_in_any_field_gro_compares_are_not_merged() {
    // (what, edit of the third of four segments; l4 is where TCP starts). Every edited
    // packet is resealed: its checksums are right, only the field differs.
    type Edit = (&'static str, fn(&mut [u8], usize));
    let both: [Edit; 6] = [
        ("source port", |p, l4| p[l4 + 1] ^= 1),
        ("destination port", |p, l4| p[l4 + 3] ^= 1),
        ("ACK number", |p, l4| p[l4 + 11] ^= 1),
        ("window", |p, l4| p[l4 + 15] ^= 1),
        ("timestamp option", |p, l4| p[l4 + 27] ^= 1),
        ("data offset", |p, l4| {
            // The same options, one NOP longer: 36 bytes of TCP header.
            let mut longer = p[..l4 + 32].to_vec();
            longer.extend_from_slice(&[1, 1, 1, 1]);
            longer.extend_from_slice(&p[l4 + 32..p.len() - 4]);
            longer[l4 + 12] = (36 / 4) << 4;
            p.copy_from_slice(&longer);
        }),
    ];
    let v4: [Edit; 5] = [
        ("IPv4 source address", |p, _| p[15] ^= 1),
        ("IPv4 destination address", |p, _| p[19] ^= 1),
        ("IPv4 TTL", |p, _| p[8] -= 1),
        ("IPv4 ToS", |p, _| p[1] ^= 0x20),
        ("IPv4 don't-fragment", |p, _| p[6] ^= 0x40),
    ];
    let v6: [Edit; 4] = [
        ("IPv6 source address", |p, _| p[23] ^= 1),
        ("IPv6 destination address", |p, _| p[39] ^= 1),
        ("IPv6 hop limit", |p, _| p[7] -= 1),
        ("IPv6 traffic class", |p, _| p[1] ^= 0x20),
    ];
    let cases = both
        .iter()
        .flat_map(|e| [(false, e), (true, e)])
        .chain(v4.iter().map(|e| (false, e)))
        .chain(v6.iter().map(|e| (true, e)));
    for (is_v6, (what, edit)) in cases {
        let l4 = if is_v6 { 40 } else { 20 };
        let mut segs = segments(is_v6, 4, 1000);
        edit(&mut segs[2], l4);
        reseal(&mut segs[2]);
        let out = coalesce(&segs);
        let lens: Vec<usize> = out.iter().map(|o| o.len() - VNET_HDR_LEN).collect();
        let headers = l4 + 32;
        assert_eq!(
            lens,
            [headers + 2000, segs[2].len(), segs[3].len()],
            "v6={is_v6} {what}: the first two merge, the edited one and the one after it do not"
        );
        assert_eq!(
            &out[1][VNET_HDR_LEN..],
            &segs[2][..],
            "{what}: passed through as it came"
        );
    }
}

#[test]
fn sequence_numbers_are_compared_whole() {
    for v6 in [false, true] {
        for boundary in [0x1_0000u32, 0x100_0000] {
            // Contiguous across a boundary of the sequence's bytes: merged.
            let start = boundary - 1000;
            let across: Vec<Vec<u8>> = (0..3)
                .map(|i| tcp(v6, start + i * 1000, TCP_ACK, &payload(1000)))
                .collect();
            assert_eq!(coalesce(&across).len(), 1, "v6={v6}: contiguous");
            // `boundary` bytes missing between two segments (only one byte of the
            // sequence differs from the contiguous one): never merged, or the receiver
            // gets a hole filled with the wrong bytes.
            let gap = vec![
                tcp(v6, 1000, TCP_ACK, &payload(1000)),
                tcp(v6, 2000, TCP_ACK, &payload(1000)),
                tcp(v6, 3000 + boundary, TCP_ACK, &payload(1000)),
            ];
            let out = coalesce(&gap);
            assert_eq!(out.len(), 2, "v6={v6}: a gap of {boundary:#x}");
            assert_eq!(seq_of(&out[1][VNET_HDR_LEN..]), 3000 + boundary);
        }
    }
}

#[test]
fn a_partial_checksum_that_ends_the_packet_is_completed() {
    // An empty UDP datagram: its checksum field is the packet's last two bytes.
    let mut p = vec![
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 1, 1, 10, 10, 2, 1, 10, 0x9c, 0x40, 0, 53,
        0, 8, 0, 0,
    ];
    let partial = fold(pseudo_header(&p, false, 17, 8));
    p[26..28].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    let segs = split(&hdr, &mut p.clone()).expect("completed, not refused");
    let mut pseudo = p[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 17, 0, 8]);
    pseudo.extend_from_slice(&segs[0][20..]);
    assert_eq!(reference_sum(&pseudo), 0xffff, "{:?}", segs[0]);
    // One byte short of the field: refused.
    assert_eq!(
        split(&hdr, &mut p[..27].to_vec()),
        Err(OffloadError::Malformed)
    );
}

#[test]
fn a_tcp_header_inside_the_ipv6_header_is_refused() {
    let (hdr, mut p) = super_packet(true, TCP_ACK, &payload(3000), 1400);
    // Where a TCP header at offset 20 would hold its data offset, a plausible one.
    p[20 + 12] = 0x50;
    let bad = VnetHdr {
        csum_start: 20,
        ..hdr
    };
    assert_eq!(split(&bad, &mut p), Err(OffloadError::Malformed));
}

#[test]
fn a_merged_super_packet_carries_its_own_ip_length_and_header_checksum() {
    for v6 in [false, true] {
        let out = coalesce(&segments(v6, 5, 1000));
        assert_eq!(out.len(), 1);
        let pkt = &out[0][VNET_HDR_LEN..];
        if v6 {
            let payload_len = u16::from_be_bytes([pkt[4], pkt[5]]);
            assert_eq!(
                usize::from(payload_len),
                pkt.len() - 40,
                "IPv6 payload length"
            );
        } else {
            let total = u16::from_be_bytes([pkt[2], pkt[3]]);
            assert_eq!(usize::from(total), pkt.len(), "IPv4 total length");
            assert!(reference_ipv4_ok(pkt), "IPv4 header checksum");
        }
        // CHECKSUM_PARTIAL: the TCP checksum field holds the pseudo-header sum.
        let hdr = VnetHdr::decode(&out[0]).unwrap();
        let l4 = usize::from(hdr.csum_start);
        let field = u16::from_be_bytes([pkt[l4 + 16], pkt[l4 + 17]]);
        assert_eq!(field, fold(pseudo_header(pkt, v6, 6, pkt.len() - l4)));
    }
}

#[test]
fn truncated_or_optioned_tcp_packets_pass_through_as_they_came() {
    // A whole segment with its IP header and the first bytes of TCP only: each header's
    // length fields agree with the packet, so only the size says it is too short.
    let truncated = |v6: bool, len: usize| {
        let mut p = tcp(v6, 1000, TCP_ACK, &payload(100));
        p.truncate(len);
        if v6 {
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[10..12].fill(0);
            let sum = ipv4_header_checksum(&p[..20]);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        p
    };
    // IPv4 with 4 bytes of IP options (IHL 6) and correct checksums: not merged, since
    // the merged header is rebuilt for IHL 5.
    let optioned = |seq: u32| {
        let plain = tcp(false, seq, TCP_ACK, &payload(1000));
        let mut p = plain[..20].to_vec();
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(&plain[20..]);
        p[0] = 0x46;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[10..12].fill(0);
        let sum = ipv4_header_checksum(&p[..24]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p[24 + 16..24 + 18].fill(0);
        let tcp_sum = checksum_add(&p[24..], pseudo_header(&p, false, 6, p.len() - 24));
        p[24 + 16..24 + 18].copy_from_slice(&(!fold(tcp_sum)).to_be_bytes());
        assert!(reference_tcp_ok(&p), "test packet builder is wrong");
        p
    };
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("IPv4, 30 bytes", vec![truncated(false, 30)]),
        ("IPv4, 39 bytes", vec![truncated(false, 39)]),
        ("IPv6, 50 bytes", vec![truncated(true, 50)]),
        ("IPv6, 59 bytes", vec![truncated(true, 59)]),
        ("IPv4 options", vec![optioned(1000), optioned(2000)]),
    ];
    for (what, packets) in cases {
        let out = coalesce(&packets);
        assert_eq!(out.len(), packets.len(), "{what}");
        for (o, p) in out.iter().zip(&packets) {
            assert_eq!(VnetHdr::decode(o), Some(VnetHdr::default()), "{what}");
            assert_eq!(&o[VNET_HDR_LEN..], &p[..], "{what}");
        }
    }
}

#[test]
fn packets_of_another_protocol_are_never_merged_even_when_their_bytes_read_as_tcp() {
    for v6 in [false, true] {
        // Consecutive TCP segments relabelled UDP: everything after the IP header, the
        // checksum included, still reads as a valid continuation.
        let lookalikes: Vec<Vec<u8>> = segments(v6, 3, 1000)
            .into_iter()
            .map(|mut p| {
                p[if v6 { 6 } else { 9 }] = 17;
                reseal(&mut p);
                p
            })
            .collect();
        let out = coalesce(&lookalikes);
        assert_eq!(out.len(), 3, "v6={v6}");
        for (o, p) in out.iter().zip(&lookalikes) {
            assert_eq!(&o[VNET_HDR_LEN..], &p[..], "v6={v6}: as it came");
        }
    }
}

/// An IPv4 TSO super-packet with `ip_opts` bytes of IP options (NOPs) and a TCP header
/// of `tcp_len` bytes (NOP-padded), as the kernel hands it over.
fn super_packet_v4(ip_opts: usize, tcp_len: usize, data: &[u8], mss: u16) -> (VnetHdr, Vec<u8>) {
    let l4 = 20 + ip_opts;
    let headers = l4 + tcp_len;
    let mut p = vec![0u8; headers + data.len()];
    let total = p.len();
    write_ipv4_header(&mut p, l4);
    p[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[l4 + 2..l4 + 4].copy_from_slice(&5432u16.to_be_bytes());
    p[l4 + 4..l4 + 8].copy_from_slice(&1000u32.to_be_bytes());
    p[l4 + 8..l4 + 12].copy_from_slice(&777u32.to_be_bytes());
    p[l4 + 12] = ((tcp_len / 4) as u8) << 4;
    p[l4 + 13] = TCP_ACK | TCP_PSH;
    p[l4 + 14..l4 + 16].copy_from_slice(&512u16.to_be_bytes());
    p[l4 + 20..headers].fill(1);
    p[headers..].copy_from_slice(data);
    let partial = fold(pseudo_header(&p, false, 6, total - l4));
    p[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: headers as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (hdr, p)
}

#[test]
fn tso_super_packets_of_every_header_length_split_into_valid_segments() {
    // (IP options, TCP header length): none at all, IP options, and the largest headers
    // (60 + 60 bytes). 350 bytes of payload in segments of 100: a small super-packet.
    let data = payload(350);
    for (ip_opts, tcp_len) in [(0, 20), (4, 20), (0, 60), (40, 60)] {
        let what = format!("IP options {ip_opts}, TCP header {tcp_len}");
        let (hdr, mut p) = super_packet_v4(ip_opts, tcp_len, &data, 100);
        let l4 = 20 + ip_opts;
        let headers = l4 + tcp_len;
        let segs = split(&hdr, &mut p).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(segs.len(), 4, "{what}");
        let mut joined = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            assert_eq!(reference_sum(&seg[..l4]), 0xffff, "{what} {i}: IP checksum");
            assert!(reference_tcp_ok(seg), "{what} {i}: TCP checksum");
            assert_eq!(seq_of_at(seg, l4), 1000 + 100 * i as u32, "{what} {i}");
            assert!(
                seg[20..l4].iter().all(|&b| b == 1),
                "{what} {i}: IP options kept"
            );
            joined.extend_from_slice(&seg[headers..]);
        }
        assert_eq!(joined, data, "{what}: payload reassembles");
    }
}

fn seq_of_at(p: &[u8], l4: usize) -> u32 {
    u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]])
}

#[test]
fn a_packet_whose_checksum_is_complete_passes_untouched() {
    // No NEEDS_CSUM: csum_start and csum_offset mean nothing, the packet is sent as it is.
    let mut p = tcp(false, 1000, TCP_ACK, &payload(300));
    let before = p.clone();
    let segs = split(&VnetHdr::default(), &mut p).unwrap();
    assert_eq!(segs, vec![before]);
}

#[test]
fn tso_headers_the_packet_cannot_hold_are_refused() {
    let (hdr, p) = super_packet_v4(0, 20, &payload(3000), 1400);
    // TCP said to start inside the IPv4 header, where the bytes read as a data offset.
    let mut inside = p.clone();
    inside[12 + 12] = 0x50;
    let inside_hdr = VnetHdr {
        csum_start: 12,
        ..hdr
    };
    // A TCP data offset below 5 words.
    let mut short_tcp = p.clone();
    short_tcp[20 + 12] = 0x40;
    // Headers past the 120 bytes a segment can have: TCP said to start at 80.
    let mut deep = p.clone();
    deep[80 + 12] = 0xf0;
    let deep_hdr = VnetHdr {
        csum_start: 80,
        ..hdr
    };
    for (what, hdr, mut pkt) in [
        ("inside the IP header", inside_hdr, inside),
        ("data offset 4", hdr, short_tcp),
        ("headers past 120 bytes", deep_hdr, deep),
    ] {
        assert_eq!(
            split(&hdr, &mut pkt),
            Err(OffloadError::Malformed),
            "{what}"
        );
    }
}

#[test]
fn fragments_and_segments_without_payload_are_never_merged() {
    for v6 in [false, true] {
        // Duplicate ACKs, each a signal to the sender: every one is delivered.
        let acks: Vec<Vec<u8>> = (0..3).map(|_| tcp(v6, 5000, TCP_ACK, &[])).collect();
        assert_eq!(
            coalesce(&acks),
            {
                let mut framed = Vec::new();
                for a in &acks {
                    let mut f = vec![0u8; VNET_HDR_LEN];
                    f.extend_from_slice(a);
                    framed.push(f);
                }
                framed
            },
            "v6={v6}: duplicate ACKs"
        );
    }
    // IPv4 fragments whose bytes still check out as TCP: more-fragments set, or an offset.
    type Edit = (&'static str, fn(&mut [u8]));
    let edits: [Edit; 2] = [
        ("more fragments", |p| p[6] |= 0x20),
        ("fragment offset", |p| p[7] = 1),
    ];
    for (what, edit) in edits {
        let mut segs = segments(false, 3, 1000);
        edit(&mut segs[1]);
        reseal(&mut segs[1]);
        let out = coalesce(&segs);
        assert_eq!(out.len(), 3, "{what}");
        assert_eq!(&out[1][VNET_HDR_LEN..], &segs[1][..], "{what}: as it came");
    }
}
