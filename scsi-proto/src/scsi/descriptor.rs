//! Walking lists of variable-length descriptors, with nom (see decision 0010).
//!
//! SPC and SBC parameter lists carry descriptors back to back, each saying how long it is.
//! Hand-written, every walk repeats the same index arithmetic (`at + 4 > len`, `at + n >
//! len`, `at += n`) and each repetition is a chance for an off-by-one or an overflow. Here
//! the length-prefixed shapes are nom parsers over the remaining input, and [`split`] walks a
//! list with one of them, handing out each descriptor with its offset (for the sense-key
//! specific field pointer). Callers keep the checks that decide *which* sense a bad
//! descriptor gets, in the order the standards give.

use nom::bytes::complete::take;
use nom::combinator::recognize;
use nom::multi::length_data;
use nom::number::complete::{be_u16, be_u32};
use nom::sequence::preceded;
use nom::IResult;

/// The common SPC descriptor shape: two bytes (type, format, flags), a 16-bit length of what
/// follows (bytes 2-3), then that many bytes — a TransportID (SPC-4 7.6.4), an EXTENDED COPY
/// segment descriptor (SPC-4 6.4.5). Returns the whole descriptor, header included.
pub(crate) fn length16(i: &[u8]) -> IResult<&[u8], &[u8]> {
    recognize(preceded(take(2usize), length_data(be_u16)))(i)
}

/// A list introduced by a 32-bit length that covers exactly the rest of `i` (the
/// TRANSPORTID PARAMETER DATA LENGTH of a SPEC_I_PT list). `None` when the length claims
/// more or less than there is.
pub(crate) fn exact_list32(i: &[u8]) -> Option<&[u8]> {
    match length_data::<_, _, nom::error::Error<&[u8]>, _>(be_u32)(i) {
        Ok(([], list)) => Some(list),
        _ => None,
    }
}

/// The descriptors of `list` as `one` cuts them, each with its offset in `list`. A trailing
/// piece `one` cannot take (a truncated descriptor) ends the walk with `Err(its offset)`.
pub(crate) fn split<'a, P>(
    list: &'a [u8],
    mut one: P,
) -> impl Iterator<Item = Result<(usize, &'a [u8]), usize>> + 'a
where
    P: FnMut(&'a [u8]) -> IResult<&'a [u8], &'a [u8]> + 'a,
{
    let mut rest = list;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let at = list.len() - rest.len();
        match one(rest) {
            Ok((next, d)) => {
                rest = next;
                Some(Ok((at, d)))
            }
            Err(_) => {
                rest = &[];
                Some(Err(at))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length16_takes_header_and_body() {
        let b = [0x41, 0, 0, 2, 0xAA, 0xBB, 0xCC];
        assert_eq!(length16(&b), Ok((&[0xCC][..], &b[..6])));
        assert!(length16(&b[..5]).is_err(), "body cut short");
        assert!(length16(&b[..3]).is_err(), "header cut short");
        let max = [0, 0, 0xFF, 0xFF];
        assert!(length16(&max).is_err(), "a 64 KiB claim on 4 bytes");
    }

    #[test]
    fn exact_list32_wants_the_whole_rest() {
        assert_eq!(exact_list32(&[0, 0, 0, 2, 7, 8]), Some(&[7, 8][..]));
        assert_eq!(exact_list32(&[0, 0, 0, 0]), Some(&[][..]));
        assert_eq!(exact_list32(&[0, 0, 0, 1, 7, 8]), None, "bytes left over");
        assert_eq!(exact_list32(&[0, 0, 0, 3, 7, 8]), None, "claims more");
        assert_eq!(exact_list32(&[0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(exact_list32(&[0, 0]), None, "no length");
    }

    #[test]
    fn split_gives_offsets_and_stops_at_a_truncated_tail() {
        let list = [1, 0, 0, 1, 9, 2, 0, 0, 0, 3, 0, 0, 5];
        let got: Vec<_> = split(&list, length16).collect();
        assert_eq!(
            got,
            vec![Ok((0, &list[0..5])), Ok((5, &list[5..9])), Err(9)]
        );
        assert_eq!(split(&[], length16).count(), 0);
    }
}
