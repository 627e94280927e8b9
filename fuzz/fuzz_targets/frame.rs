//! Frames on the envelope stream: one frame body, and a whole stream read as the
//! receiver reads it (length prefixes, the frame limit, partial frames).
#![no_main]

use agent_core::fuzzing::{read_frames, Frame};
use libfuzzer_sys::fuzz_target;

fn round_trip(frame: &Frame) {
    let encoded = frame.encode();
    let again = Frame::decode(&encoded[4..]).expect("an encoded frame decodes");
    assert_eq!(&again, frame, "decode(encode(frame)) != frame");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        round_trip(&frame);
    }
    let (frames, _stopped) = read_frames(data, 4096);
    for frame in &frames {
        round_trip(frame);
    }
});
