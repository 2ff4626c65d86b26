//! The `/proc/net/tcp{,6}` parser on arbitrary text (the input as lossy
//! UTF-8), in both address widths. `find_by_inode` must agree with
//! `parse_table`: it answers with the first ESTABLISHED row carrying the
//! inode, and never matches inode 0.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slurm_node::netinfo::{TCP_ESTABLISHED, find_by_inode, parse_table};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for v6 in [false, true] {
        let rows = parse_table(&text, v6);
        for row in &rows {
            assert_eq!(row.local.is_ipv6(), v6);
            assert_eq!(row.remote.is_ipv6(), v6);
        }
        let probes = rows
            .iter()
            .map(|row| row.inode)
            .take(8)
            .chain([0, 1, u64::MAX]);
        for inode in probes {
            let expected = rows
                .iter()
                .find(|row| row.state == TCP_ESTABLISHED && row.inode != 0 && row.inode == inode)
                .map(|row| (row.local, row.remote));
            assert_eq!(find_by_inode(&text, inode, v6), expected, "inode {inode}");
        }
    }
});
