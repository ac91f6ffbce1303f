//! Any bytes as a capture file: the reader must return packets or an error, never panic or
//! allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnpflow::capture::CaptureFile;
use mnpflow::decode::decode;

fuzz_target!(|data: &[u8]| {
    let reader = Box::new(std::io::Cursor::new(data.to_vec()));
    if let Ok(mut cf) = CaptureFile::from_reader(std::path::Path::new("fuzz.pcap"), reader) {
        let mut n = 0;
        while let Ok(Some(p)) = cf.next_packet() {
            let _ = decode(&p);
            n += 1;
            if n > 10_000 {
                break;
            }
        }
    }
});
