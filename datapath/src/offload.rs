//! Segmentation and coalescing offloads between the TUN interface and WireGuard.
//!
//! With `IFF_VNET_HDR` and TSO enabled, the kernel hands the gateway TCP "super-packets"
//! of up to 64 KiB with a `virtio_net_hdr` in front; [`segment`] cuts them into MTU-sized
//! segments with correct headers and checksums before encryption. On the way back,
//! [`Coalescer`] merges consecutive decrypted segments of one TCP flow into one
//! super-packet, so the kernel receives 64 KiB per write instead of 1.4 KiB. Together
//! with UDP GSO/GRO on the underlay socket this is what takes a userspace tunnel from
//! one system call per packet to one per ~45 packets.
//!
//! Everything here is pure: buffers in, buffers out, no I/O.

/// Size of `struct virtio_net_hdr` (without `num_buffers`), the TUN default.
pub const VNET_HDR_LEN: usize = 10;
/// Largest IP packet: the IPv4 total-length field is 16 bits.
pub const MAX_PACKET: usize = 65_535;

const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
const F_NEEDS_CSUM: u8 = 1;

const PROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// The `virtio_net_hdr` the kernel puts before (and expects before) each TUN packet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*` flags.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type.
    pub gso_type: u8,
    /// Length of the headers up to the payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the transport checksum coverage starts.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the header at the start of `buf` (native endian, as the kernel writes it).
    pub fn decode(buf: &[u8]) -> Option<VnetHdr> {
        let b = buf.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `buf`.
    pub fn encode(&self, buf: &mut [u8]) {
        buf[0] = self.flags;
        buf[1] = self.gso_type;
        buf[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        buf[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        buf[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        buf[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Ones'-complement sum of `data` (big-endian 16-bit words) onto `initial`, unfolded.
///
/// Sums native-order 32-bit words into four independent 64-bit lanes: there is no carry
/// chain between the additions (a lane holds 2^32 words, far more than any packet), so
/// the loop vectorises, about twice as fast as an add-with-carry chain. Folding a sum of
/// 32-bit words gives the same ones'-complement sum as of 16-bit words, and the folded sum
/// is swapped into network order at the end (RFC 1071 §2(B): byte-order independence).
/// Every segment of a bulk stream is summed twice, once by each gateway.
#[inline]
pub fn checksum_add(data: &[u8], initial: u64) -> u64 {
    let word = |w: &[u8]| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    let mut lanes = [0u64; 4];
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += word(w);
        }
    }
    let mut words = blocks.remainder().chunks_exact(4);
    let wide = lanes.iter().sum::<u64>() + (&mut words).map(word).sum::<u64>();
    let native = fold(wide);
    let mut acc = initial + u64::from(u16::from_be(native));
    let mut pairs = words.remainder().chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum of an IPv4 or IPv6 packet for a transport of `len` bytes.
fn pseudo_header(packet: &[u8], v6: bool, proto: u8, len: usize) -> u64 {
    let addrs = if v6 { &packet[8..40] } else { &packet[12..20] };
    checksum_add(addrs, u64::from(proto) + len as u64)
}

/// The IPv4 header checksum of `header` (its checksum field must be zero).
fn ipv4_header_checksum(header: &[u8]) -> u16 {
    !fold(checksum_add(header, 0))
}

/// Why a packet from the TUN interface could not be turned into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Headers are truncated or inconsistent with the vnet header.
    Malformed,
    /// A segmentation type Causeway does not enable (e.g. UDP).
    Unsupported,
}

/// Most header bytes in front of a TCP payload: a 60-byte IPv4 header plus 60 bytes of TCP.
const MAX_HEADERS: usize = 120;

/// Cuts one packet read from the TUN interface into wire-ready IP packets, in place.
///
/// `packet` is the IP packet after the vnet header; `each` is called with every
/// segment in order and must be done with it before returning, because segment
/// `i + 1`'s headers are written over the tail of segment `i`'s payload — that is
/// what saves copying every payload before encryption. A packet without GSO yields
/// one segment, with its transport checksum completed if the kernel left it partial.
/// Returns the number of segments.
pub fn segment(
    hdr: &VnetHdr,
    packet: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let gso_type = hdr.gso_type & !GSO_ECN;
    if gso_type == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_checksum(packet, hdr)?;
        }
        each(packet);
        return Ok(1);
    }
    let v6 = match gso_type {
        GSO_TCPV4 => false,
        GSO_TCPV6 => true,
        _ => return Err(OffloadError::Unsupported),
    };
    let l4 = usize::from(hdr.csum_start);
    if packet.len() < l4 + 20 || (!v6 && (packet.len() < 20 || l4 < 20)) || (v6 && l4 < 40) {
        return Err(OffloadError::Malformed);
    }
    // The kernel's hdr_len has been wrong before; derive it from the TCP header itself.
    let headers = l4 + usize::from(packet[l4 + 12] >> 4) * 4;
    let gso = usize::from(hdr.gso_size);
    if headers < l4 + 20 || headers > MAX_HEADERS || headers > packet.len() || gso == 0 {
        return Err(OffloadError::Malformed);
    }
    let mut template = [0u8; MAX_HEADERS];
    template[..headers].copy_from_slice(&packet[..headers]);
    let template = &template[..headers];
    let payload = packet.len() - headers;
    let count = payload.div_ceil(gso).max(1);
    let first_seq = u32::from_be_bytes([
        template[l4 + 4],
        template[l4 + 5],
        template[l4 + 6],
        template[l4 + 7],
    ]);
    let first_id = u16::from_be_bytes([template[4], template[5]]);
    let flags = template[l4 + 13];
    for i in 0..count {
        // Segment i's payload starts at headers + i*gso; its headers go just before it.
        let start = i * gso;
        let end = (headers + (i + 1) * gso).min(packet.len());
        let seg = &mut packet[start..end];
        let total = seg.len();
        seg[..headers].copy_from_slice(template);
        if v6 {
            seg[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            seg[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
            seg[10..12].copy_from_slice(&[0, 0]);
            let ihl = usize::from(seg[0] & 0x0f) * 4;
            let sum = ipv4_header_checksum(&seg[..ihl.min(l4)]);
            seg[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let seq = first_seq.wrapping_add((i * gso) as u32);
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        seg[l4 + 13] = f;
        seg[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let sum = checksum_add(&seg[l4..], pseudo_header(seg, v6, PROTO_TCP, total - l4));
        seg[l4 + 16..l4 + 18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        each(seg);
    }
    Ok(count)
}

/// Completes a transport checksum the kernel left partial (it holds the pseudo-header sum).
fn complete_checksum(packet: &mut [u8], hdr: &VnetHdr) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(OffloadError::Malformed);
    }
    let sum = checksum_add(&packet[start..], 0);
    packet[at..at + 2].copy_from_slice(&(!fold(sum)).to_be_bytes());
    Ok(())
}

/// A TCP segment's fields that decide whether it continues the segment before it.
#[derive(Debug, Clone, Copy)]
struct TcpSegment {
    v6: bool,
    l4: usize,
    headers: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

/// Parses `packet` as a TCP segment that may be coalesced: no IP options or fragments,
/// only ACK (or ACK|PSH) set, some payload, and a correct checksum.
fn coalescable(packet: &[u8]) -> Option<TcpSegment> {
    let v6 = match packet.first()? >> 4 {
        4 => false,
        6 => true,
        _ => return None,
    };
    let l4 = if v6 {
        if packet.len() < 60 || packet[6] != PROTO_TCP {
            return None;
        }
        if usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40 != packet.len() {
            return None;
        }
        40
    } else {
        if packet.len() < 40 || packet[0] & 0x0f != 5 || packet[9] != PROTO_TCP {
            return None;
        }
        if usize::from(u16::from_be_bytes([packet[2], packet[3]])) != packet.len() {
            return None;
        }
        // More-fragments set or a fragment offset: not a whole segment.
        if packet[6] & 0x3f != 0 || packet[7] != 0 {
            return None;
        }
        20
    };
    let tcph = usize::from(packet[l4 + 12] >> 4) * 4;
    let headers = l4 + tcph;
    if !(20..=60).contains(&tcph) || headers >= packet.len() {
        return None;
    }
    let flags = packet[l4 + 13];
    if flags != TCP_ACK && flags != TCP_ACK | TCP_PSH {
        return None;
    }
    let sum = checksum_add(
        &packet[l4..],
        pseudo_header(packet, v6, PROTO_TCP, packet.len() - l4),
    );
    if fold(sum) != 0xffff {
        return None;
    }
    Some(TcpSegment {
        v6,
        l4,
        headers,
        seq: u32::from_be_bytes([
            packet[l4 + 4],
            packet[l4 + 5],
            packet[l4 + 6],
            packet[l4 + 7],
        ]),
        payload: packet.len() - headers,
        psh: flags & TCP_PSH != 0,
    })
}

/// Whether `next` may follow `first` in one super-packet: same flow, same ACK and window,
/// same options, same IP header fields that GRO compares (ToS/TTL/DF, class/hop limit).
fn same_flow(first: &[u8], f: &TcpSegment, next: &[u8], n: &TcpSegment) -> bool {
    if f.v6 != n.v6 || f.headers != n.headers {
        return false;
    }
    let ip_same = if f.v6 {
        // Version/traffic class, hop limit, addresses.
        first[0..2] == next[0..2] && first[7] == next[7] && first[8..40] == next[8..40]
    } else {
        first[1] == next[1]
            && first[6] & 0xe0 == next[6] & 0xe0
            && first[8] == next[8]
            && first[12..20] == next[12..20]
    };
    let l4 = f.l4;
    // Ports, then ACK number, data offset, window (skipping seq, flags and checksum), options.
    ip_same
        && first[l4..l4 + 4] == next[l4..l4 + 4]
        && first[l4 + 8..l4 + 13] == next[l4 + 8..l4 + 13]
        && first[l4 + 14..l4 + 16] == next[l4 + 14..l4 + 16]
        && first[l4 + 20..f.headers] == next[l4 + 20..n.headers]
}

/// Merges consecutive segments of one TCP flow into super-packets for the TUN interface.
///
/// Feed decrypted packets in arrival order with [`Coalescer::push`]; every packet comes
/// out exactly once through the `emit` callback, as a buffer starting with its vnet
/// header, either merged or as it came. Call [`Coalescer::flush`] at the end of a batch.
pub struct Coalescer {
    buf: Vec<u8>,
    len: usize,
    active: Option<Active>,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    first: TcpSegment,
    next_seq: u32,
    segments: usize,
    short: bool,
    psh: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// An empty coalescer with room for one maximum-size super-packet.
    pub fn new() -> Self {
        Coalescer {
            buf: vec![0u8; VNET_HDR_LEN + MAX_PACKET],
            len: 0,
            active: None,
        }
    }

    /// Adds one decrypted packet; may emit the previous super-packet or this packet.
    pub fn push(&mut self, packet: &[u8], emit: &mut impl FnMut(&[u8])) {
        let segment = coalescable(packet);
        if let (Some(active), Some(seg)) = (self.active, segment) {
            if self.can_append(&active, packet, &seg) {
                self.append(packet, &seg);
                return;
            }
        }
        self.flush(emit);
        match segment {
            Some(seg) => {
                self.buf[VNET_HDR_LEN..VNET_HDR_LEN + packet.len()].copy_from_slice(packet);
                self.len = packet.len();
                self.active = Some(Active {
                    first: seg,
                    next_seq: seg.seq.wrapping_add(seg.payload as u32),
                    segments: 1,
                    short: false,
                    psh: seg.psh,
                });
            }
            None => {
                // Not TCP data: pass through with an empty vnet header.
                let out = &mut self.buf[..VNET_HDR_LEN + packet.len()];
                VnetHdr::default().encode(out);
                out[VNET_HDR_LEN..].copy_from_slice(packet);
                emit(out);
            }
        }
    }

    fn can_append(&self, active: &Active, packet: &[u8], seg: &TcpSegment) -> bool {
        let first = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.len];
        !active.psh
            && !active.short
            && seg.seq == active.next_seq
            && seg.payload <= active.first.payload
            && self.len + seg.payload <= MAX_PACKET
            && same_flow(first, &active.first, packet, seg)
    }

    fn append(&mut self, packet: &[u8], seg: &TcpSegment) {
        let at = VNET_HDR_LEN + self.len;
        self.buf[at..at + seg.payload].copy_from_slice(&packet[seg.headers..]);
        self.len += seg.payload;
        if let Some(active) = self.active.as_mut() {
            active.next_seq = active.next_seq.wrapping_add(seg.payload as u32);
            active.segments += 1;
            active.short = seg.payload < active.first.payload;
            if seg.psh {
                active.psh = true;
                self.buf[VNET_HDR_LEN + active.first.l4 + 13] |= TCP_PSH;
            }
        }
    }

    /// Emits the pending super-packet, if any.
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        let Some(active) = self.active.take() else {
            return;
        };
        let len = self.len;
        let (hdr_area, pkt) = self.buf.split_at_mut(VNET_HDR_LEN);
        let pkt = &mut pkt[..len];
        if active.segments == 1 {
            VnetHdr::default().encode(hdr_area);
        } else {
            let f = active.first;
            if f.v6 {
                pkt[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            } else {
                pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                pkt[10..12].copy_from_slice(&[0, 0]);
                let sum = ipv4_header_checksum(&pkt[..20]);
                pkt[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel does the rest.
            let partial = fold(pseudo_header(pkt, f.v6, PROTO_TCP, len - f.l4));
            pkt[f.l4 + 16..f.l4 + 18].copy_from_slice(&partial.to_be_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if f.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: f.headers as u16,
                gso_size: f.payload as u16,
                csum_start: f.l4 as u16,
                csum_offset: 16,
            }
            .encode(hdr_area);
        }
        emit(&self.buf[..VNET_HDR_LEN + len]);
    }
}

#[cfg(test)]
mod tests;
