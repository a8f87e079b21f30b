//! The pseudo-random generator C nbdkit's random plugins use, so that a
//! given seed serves the very same bytes: xoshiro256** 1.0 (Blackman and
//! Vigna), its 256-bit state filled from a 64-bit seed by splitmix64.
//!
//! Fast and repeatable, and not in the least cryptographic.

/// xoshiro256** state.
#[derive(Debug, Clone)]
pub struct Xoshiro([u64; 4]);

/// One splitmix64 step: advance `seed` and return the next output.
fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Xoshiro {
    /// The state for a 64-bit seed: four splitmix64 outputs.
    pub fn new(mut seed: u64) -> Xoshiro {
        let mut s = [0u64; 4];
        for w in &mut s {
            *w = splitmix(&mut seed);
        }
        Xoshiro(s)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs of splitmix64 seeded with 0 (Vigna's reference
        // implementation).
        let mut seed = 0;
        assert_eq!(splitmix(&mut seed), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix(&mut seed), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix(&mut seed), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn xoshiro256starstar_reference_values() {
        // State {1, 2, 3, 4}: the reference implementation's outputs.
        let mut r = Xoshiro([1, 2, 3, 4]);
        let got: Vec<u64> = (0..4).map(|_| r.next()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }
}
