//! Mode parameters (SPC-4 7.5, SBC-3 6.4): MODE SENSE rendering and MODE SELECT parsing.
//!
//! Lunar exposes three pages: Caching (08h, WCE changeable: with WCE=0 every write is
//! forced to stable storage; on a store without a volatile cache, such as a pool on an RBD
//! image, WCE is 0 and not changeable: every write is stable when it completes), Control (0Ah, D_SENSE changeable: selects descriptor-format
//! sense) and Informational Exceptions Control (1Ch, reporting disabled). No parameters are
//! saveable. MODE SELECT validates every byte against the changeable mask, so a change the
//! initiator cannot make is reported with a field pointer rather than silently ignored.

use super::cdb::ModeSenseCdb;
use super::sense::{asc, Sense, SenseKey};

/// Caching mode page (SBC-4): WCE, whether writes may be acknowledged before they are stable.
pub const PAGE_CACHING: u8 = 0x08;
/// Control mode page (SPC-4): D_SENSE, whether sense data is in descriptor format.
pub const PAGE_CONTROL: u8 = 0x0A;
/// Informational Exceptions Control mode page (SPC-4): failure prediction reporting, which
/// Lunar reports as disabled.
pub const PAGE_INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
/// "Return all pages".
pub const PAGE_ALL: u8 = 0x3F;

/// The initiator-changeable mode parameters of one logical unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeParams {
    /// Caching page WCE: writes may be acknowledged before they are stable.
    pub wce: bool,
    /// Control page D_SENSE: report sense in descriptor format.
    pub d_sense: bool,
}

impl Default for ModeParams {
    fn default() -> Self {
        Self {
            wce: true,
            d_sense: false,
        }
    }
}

impl ModeParams {
    /// The defaults for a store with (`true`) or without a volatile write cache: WCE says
    /// whether there is one.
    pub fn for_cache(volatile_cache: bool) -> Self {
        Self {
            wce: volatile_cache,
            ..Self::default()
        }
    }
}

/// Which values a MODE SENSE returns (PC field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageControl {
    /// Current values.
    Current,
    /// Changeable-bit masks.
    Changeable,
    /// Default values.
    Default,
}

/// The pages in the order "all pages" returns them.
const PAGES: [u8; 3] = [PAGE_CACHING, PAGE_CONTROL, PAGE_INFORMATIONAL_EXCEPTIONS];

/// Render one page (including its 2-byte header) for the given parameters.
fn page_bytes(code: u8, p: &ModeParams) -> Option<Vec<u8>> {
    Some(match code {
        PAGE_CACHING => {
            let mut b = vec![0u8; 20];
            b[0] = PAGE_CACHING;
            b[1] = 0x12;
            if p.wce {
                b[2] |= 0x04;
            }
            b
        }
        PAGE_CONTROL => {
            let mut b = vec![0u8; 12];
            b[0] = PAGE_CONTROL;
            b[1] = 0x0A;
            if p.d_sense {
                b[2] |= 0x04;
            }
            b[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering allowed
            b[8] = 0xFF; // BUSY TIMEOUT PERIOD: unlimited
            b[9] = 0xFF;
            b
        }
        PAGE_INFORMATIONAL_EXCEPTIONS => {
            let mut b = vec![0u8; 12];
            b[0] = PAGE_INFORMATIONAL_EXCEPTIONS;
            b[1] = 0x0A;
            b[2] = 0x08; // DEXCPT: no informational exception reporting
            b
        }
        _ => return None,
    })
}

/// Changeable-bit mask of a page (same layout as the page); WCE only with a volatile cache.
fn page_mask(code: u8, volatile_cache: bool) -> Option<Vec<u8>> {
    let mut b = page_bytes(
        code,
        &ModeParams {
            wce: false,
            d_sense: false,
        },
    )?;
    b[2..].fill(0);
    match code {
        PAGE_CACHING if volatile_cache => b[2] = 0x04,
        PAGE_CONTROL => b[2] = 0x04,
        _ => {}
    }
    Some(b)
}

fn render_page(
    code: u8,
    pc: PageControl,
    current: &ModeParams,
    volatile_cache: bool,
) -> Option<Vec<u8>> {
    match pc {
        PageControl::Current => page_bytes(code, current),
        PageControl::Default => page_bytes(code, &ModeParams::for_cache(volatile_cache)),
        PageControl::Changeable => page_mask(code, volatile_cache),
    }
}

/// What the device server knows about the logical unit when answering MODE SENSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeContext {
    /// Number of logical blocks.
    pub blocks: u64,
    /// Logical block length.
    pub block_size: u32,
    /// Write protected (read-only LUN): the WP bit of the device-specific parameter.
    pub write_protected: bool,
    /// The store has a volatile write cache (a page cache): WCE defaults to 1 and is
    /// changeable. Without one (an RBD pool) WCE is 0 and fixed.
    pub volatile_cache: bool,
}

/// Render MODE SENSE(6)/(10) parameter data (full length; the caller truncates to the
/// allocation length).
pub fn mode_sense(
    req: &ModeSenseCdb,
    current: &ModeParams,
    ctx: &ModeContext,
) -> Result<Vec<u8>, Sense> {
    let pc = match req.pc {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                asc::SAVING_PARAMETERS_NOT_SUPPORTED,
            ))
        }
    };
    // Lunar's pages have no subpages: subpage 00h for one page; 00h or FFh for all pages.
    let pages: Vec<u8> = if req.page == PAGE_ALL {
        if req.subpage != 0x00 && req.subpage != 0xFF {
            return Err(Sense::invalid_field_in_cdb(3, Some(7)));
        }
        PAGES
            .iter()
            .filter_map(|&c| render_page(c, pc, current, ctx.volatile_cache))
            .flatten()
            .collect()
    } else {
        let page = render_page(req.page, pc, current, ctx.volatile_cache)
            .ok_or(Sense::invalid_field_in_cdb(2, Some(5)))?;
        if req.subpage != 0 {
            return Err(Sense::invalid_field_in_cdb(3, Some(7)));
        }
        page
    };

    let long = req.ten && req.llbaa;
    let descriptor: Vec<u8> = if req.dbd {
        Vec::new()
    } else if pc == PageControl::Changeable {
        vec![0; if long { 16 } else { 8 }]
    } else if long {
        let mut d = vec![0u8; 16];
        d[..8].copy_from_slice(&ctx.blocks.to_be_bytes());
        d[12..16].copy_from_slice(&ctx.block_size.to_be_bytes());
        d
    } else {
        let mut d = vec![0u8; 8];
        let n = u32::try_from(ctx.blocks).unwrap_or(u32::MAX);
        d[..4].copy_from_slice(&n.to_be_bytes());
        d[5..8].copy_from_slice(&ctx.block_size.to_be_bytes()[1..]);
        d
    };

    // Device-specific parameter (SBC-3 6.4.1): WP and DPOFUA.
    let mut dsp = 0x10;
    if ctx.write_protected && pc != PageControl::Changeable {
        dsp |= 0x80;
    }
    let mut out;
    if req.ten {
        out = vec![0u8; 8];
        let len = 6 + descriptor.len() + pages.len();
        out[0..2].copy_from_slice(&(len.min(0xFFFF) as u16).to_be_bytes());
        out[3] = dsp;
        if long {
            out[4] = 0x01; // LONGLBA
        }
        out[6..8].copy_from_slice(&(descriptor.len() as u16).to_be_bytes());
    } else {
        out = vec![0u8; 4];
        out[0] = (3 + descriptor.len() + pages.len()).min(0xFF) as u8;
        out[2] = dsp;
        out[3] = descriptor.len() as u8;
    }
    out.extend_from_slice(&descriptor);
    out.extend_from_slice(&pages);
    Ok(out)
}

/// Parse a MODE SELECT parameter list and apply it to `current`, returning the new
/// parameters. `data` is the Data-Out limited to PARAMETER LIST LENGTH; field pointers are
/// relative to its start.
pub fn mode_select(
    ten: bool,
    data: &[u8],
    current: &ModeParams,
    ctx: &ModeContext,
) -> Result<ModeParams, Sense> {
    if data.is_empty() {
        return Ok(*current);
    }
    let hdr = if ten { 8 } else { 4 };
    if data.len() < hdr {
        return Err(Sense::parameter_list_length_error());
    }
    // Header: MODE DATA LENGTH is reserved for MODE SELECT; MEDIUM TYPE must be 0.
    let (bd_len, medium_type_at) = if ten {
        if data[0] != 0 || data[1] != 0 {
            return Err(Sense::invalid_field_in_param(0, Some(7)));
        }
        (usize::from(u16::from_be_bytes([data[6], data[7]])), 2)
    } else {
        if data[0] != 0 {
            return Err(Sense::invalid_field_in_param(0, Some(7)));
        }
        (usize::from(data[3]), 1)
    };
    if data[medium_type_at] != 0 {
        return Err(Sense::invalid_field_in_param(
            medium_type_at as u16,
            Some(7),
        ));
    }
    let long = ten && data[4] & 0x01 != 0;
    let desc_len = if long { 16 } else { 8 };
    if bd_len != 0 && bd_len != desc_len {
        let at = if ten { 6 } else { 3 };
        return Err(Sense::invalid_field_in_param(at, Some(7)));
    }
    if hdr + bd_len > data.len() {
        return Err(Sense::parameter_list_length_error());
    }
    if bd_len != 0 {
        // A block descriptor may restate the current geometry but cannot change it.
        let d = &data[hdr..hdr + bd_len];
        let (blocks, block_size) = if long {
            let mut n = [0u8; 8];
            n.copy_from_slice(&d[..8]);
            (
                u64::from_be_bytes(n),
                u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
            )
        } else {
            (
                u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
                u32::from_be_bytes([0, d[5], d[6], d[7]]),
            )
        };
        let cur_blocks = if long {
            ctx.blocks
        } else {
            ctx.blocks.min(u64::from(u32::MAX))
        };
        if blocks != 0 && blocks != cur_blocks {
            return Err(Sense::invalid_field_in_param(hdr as u16, Some(7)));
        }
        if block_size != ctx.block_size {
            let at = hdr + if long { 12 } else { 5 };
            return Err(Sense::invalid_field_in_param(at as u16, Some(7)));
        }
    }

    let mut next = *current;
    let mut off = hdr + bd_len;
    while off < data.len() {
        let code = data[off] & 0x3F;
        if data[off] & 0x80 != 0 {
            // PS is reserved in MODE SELECT.
            return Err(Sense::invalid_field_in_param(off as u16, Some(7)));
        }
        if data[off] & 0x40 != 0 {
            // SPF: Lunar has no subpages.
            return Err(Sense::invalid_field_in_param(off as u16, Some(6)));
        }
        let Some(cur) = page_bytes(code, &next) else {
            return Err(Sense::invalid_field_in_param(off as u16, Some(5)));
        };
        if off + 2 > data.len() {
            return Err(Sense::parameter_list_length_error());
        }
        let len = usize::from(data[off + 1]);
        if len + 2 != cur.len() {
            return Err(Sense::invalid_field_in_param((off + 1) as u16, Some(7)));
        }
        if off + 2 + len > data.len() {
            return Err(Sense::parameter_list_length_error());
        }
        let mask = page_mask(code, ctx.volatile_cache).unwrap_or_default();
        let new = &data[off..off + 2 + len];
        for i in 2..new.len() {
            let bad = (new[i] ^ cur[i]) & !mask[i];
            if bad != 0 {
                let bit = 7 - bad.leading_zeros() as u8;
                return Err(Sense::invalid_field_in_param((off + i) as u16, Some(bit)));
            }
        }
        match code {
            PAGE_CACHING => next.wce = new[2] & 0x04 != 0,
            PAGE_CONTROL => next.d_sense = new[2] & 0x04 != 0,
            _ => {}
        }
        off += 2 + len;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::FieldPointer;

    const CTX: ModeContext = ModeContext {
        blocks: 2048,
        block_size: 512,
        write_protected: false,
        volatile_cache: true,
    };

    fn sense_req(ten: bool, page: u8, pc: u8) -> ModeSenseCdb {
        ModeSenseCdb {
            ten,
            dbd: false,
            llbaa: false,
            pc,
            page,
            subpage: 0,
            alloc_len: 255,
        }
    }

    #[test]
    fn mode_sense6_caching_golden() {
        let b = mode_sense(
            &sense_req(false, PAGE_CACHING, 0),
            &ModeParams::default(),
            &CTX,
        )
        .unwrap();
        assert_eq!(&b[..4], &[3 + 8 + 20, 0, 0x10, 8]);
        assert_eq!(&b[4..12], &[0, 0, 0x08, 0, 0, 0, 0x02, 0]);
        assert_eq!(&b[12..16], &[0x08, 0x12, 0x04, 0]);
        assert_eq!(b.len(), 32);
    }

    #[test]
    fn mode_sense10_all_pages_long_lba() {
        let mut r = sense_req(true, PAGE_ALL, 0);
        r.llbaa = true;
        let ctx = ModeContext {
            write_protected: true,
            ..CTX
        };
        let b = mode_sense(&r, &ModeParams::default(), &ctx).unwrap();
        let len = u16::from_be_bytes([b[0], b[1]]) as usize;
        assert_eq!(len + 2, b.len());
        assert_eq!(b[3], 0x90);
        assert_eq!(b[4], 0x01);
        assert_eq!(&b[6..8], &[0, 16]);
        assert_eq!(&b[8..16], &2048u64.to_be_bytes());
        // Pages follow in order: 08h, 0Ah, 1Ch.
        let mut off = 24;
        let mut codes = vec![];
        while off < b.len() {
            codes.push(b[off]);
            off += 2 + b[off + 1] as usize;
        }
        assert_eq!(codes, vec![0x08, 0x0A, 0x1C]);
    }

    #[test]
    fn mode_sense_changeable_and_errors() {
        let mut r = sense_req(false, PAGE_CONTROL, 1);
        r.dbd = true;
        let b = mode_sense(&r, &ModeParams::default(), &CTX).unwrap();
        assert_eq!(&b[..4], &[3 + 12, 0, 0x10, 0]);
        assert_eq!(&b[4..8], &[0x0A, 0x0A, 0x04, 0]);
        let e = mode_sense(&sense_req(false, 0x19, 0), &ModeParams::default(), &CTX).unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::cdb(2, Some(5))));
        let e = mode_sense(
            &sense_req(false, PAGE_CACHING, 3),
            &ModeParams::default(),
            &CTX,
        )
        .unwrap_err();
        assert_eq!(e.code, asc::SAVING_PARAMETERS_NOT_SUPPORTED);
        let mut r = sense_req(false, PAGE_CACHING, 0);
        r.subpage = 1;
        assert_eq!(
            mode_sense(&r, &ModeParams::default(), &CTX)
                .unwrap_err()
                .field,
            Some(FieldPointer::cdb(3, Some(7)))
        );
    }

    fn select_list(ten: bool, pages: &[Vec<u8>]) -> Vec<u8> {
        let mut v = if ten { vec![0u8; 8] } else { vec![0u8; 4] };
        for p in pages {
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn mode_select_changes_d_sense_and_wce() {
        let cur = ModeParams::default();
        let mut control = page_bytes(PAGE_CONTROL, &cur).unwrap();
        control[2] |= 0x04;
        let mut caching = page_bytes(PAGE_CACHING, &cur).unwrap();
        caching[2] &= !0x04;
        let next = mode_select(
            false,
            &select_list(false, &[control.clone(), caching]),
            &cur,
            &CTX,
        )
        .unwrap();
        assert_eq!(
            next,
            ModeParams {
                wce: false,
                d_sense: true
            }
        );
        let next = mode_select(true, &select_list(true, &[control]), &cur, &CTX).unwrap();
        assert!(next.d_sense);
        assert_eq!(mode_select(false, &[], &cur, &CTX).unwrap(), cur);
    }

    #[test]
    fn mode_select_rejects_unchangeable() {
        let cur = ModeParams::default();
        let mut control = page_bytes(PAGE_CONTROL, &cur).unwrap();
        control[4] |= 0x08; // SWP is not changeable
        let e = mode_select(false, &select_list(false, &[control]), &cur, &CTX).unwrap_err();
        assert_eq!(e.code, asc::INVALID_FIELD_IN_PARAMETER_LIST);
        assert_eq!(e.field, Some(FieldPointer::param(4 + 4, Some(3))));
        // Unknown page.
        let e = mode_select(
            false,
            &select_list(false, &[vec![0x19, 2, 0, 0]]),
            &cur,
            &CTX,
        )
        .unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(4, Some(5))));
        // Wrong page length.
        let e = mode_select(
            false,
            &select_list(false, &[vec![0x0A, 2, 0, 0]]),
            &cur,
            &CTX,
        )
        .unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(5, Some(7))));
        // Truncated page.
        let e = mode_select(
            false,
            &select_list(false, &[vec![0x0A, 0x0A, 0, 0]]),
            &cur,
            &CTX,
        )
        .unwrap_err();
        assert_eq!(e.code, asc::PARAMETER_LIST_LENGTH_ERROR);
        // Too short for a header.
        assert_eq!(
            mode_select(true, &[0; 4], &cur, &CTX).unwrap_err().code,
            asc::PARAMETER_LIST_LENGTH_ERROR
        );
    }

    #[test]
    fn mode_select_block_descriptor() {
        let cur = ModeParams::default();
        let mut v = vec![0, 0, 0, 8, 0, 0, 0x08, 0, 0, 0, 0x02, 0];
        assert!(mode_select(false, &v, &cur, &CTX).is_ok());
        v[10] = 0x10; // 4096-byte blocks: cannot change
        let e = mode_select(false, &v, &cur, &CTX).unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(9, Some(7))));
    }

    #[test]
    fn without_a_volatile_cache_wce_is_zero_and_fixed() {
        let ctx = ModeContext {
            volatile_cache: false,
            ..CTX
        };
        let sense = |pc: u8| ModeSenseCdb {
            ten: false,
            dbd: true,
            llbaa: false,
            pc,
            page: PAGE_CACHING,
            subpage: 0,
            alloc_len: 255,
        };
        let current = ModeParams::for_cache(false);
        let cur = mode_sense(&sense(0), &current, &ctx).unwrap();
        assert_eq!(cur[4 + 2] & 0x04, 0, "WCE 0");
        let changeable = mode_sense(&sense(1), &current, &ctx).unwrap();
        assert_eq!(changeable[4 + 2] & 0x04, 0, "WCE not changeable");
        let default = mode_sense(&sense(2), &current, &ctx).unwrap();
        assert_eq!(default[4 + 2] & 0x04, 0, "WCE 0 by default");
        // MODE SELECT setting WCE is refused, pointing at the bit.
        let mut sel = vec![0u8; 4];
        let mut page = cur[4..].to_vec();
        page[2] |= 0x04;
        sel.extend_from_slice(&page);
        let e = mode_select(false, &sel, &current, &ctx).unwrap_err();
        assert_eq!(e.code, asc::INVALID_FIELD_IN_PARAMETER_LIST);
        // With a volatile cache WCE stays changeable.
        let ok = mode_select(false, &sel, &ModeParams::for_cache(true), &CTX).unwrap();
        assert!(ok.wce);
    }
}
