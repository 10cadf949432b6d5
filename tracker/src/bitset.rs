//! A growable bitset over peer slots: one per live segment, so "who holds
//! this segment" costs one bit per peer.

/// Bits indexed by peer slot.
#[derive(Debug, Clone, Default)]
pub struct BitSet {
    words: Vec<u64>,
    count: u32,
}

impl BitSet {
    /// Sets bit `i`; true if it was clear.
    pub fn insert(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        if !was {
            self.count += 1;
        }
        !was
    }

    /// Clears bit `i`; true if it was set.
    pub fn remove(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        let was = *word & (1 << b) != 0;
        *word &= !(1 << b);
        if was {
            self.count -= 1;
        }
        was
    }

    /// Whether bit `i` is set.
    pub fn contains(&self, i: u32) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Number of set bits.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// No bit set.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Set bits, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let b = word.trailing_zeros();
                word &= word - 1;
                Some(w as u32 * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count_iterate() {
        let mut b = BitSet::default();
        assert!(b.insert(3));
        assert!(!b.insert(3));
        assert!(b.insert(200));
        assert!(b.contains(200) && !b.contains(199) && !b.contains(100_000));
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().collect::<Vec<_>>(), [3, 200]);
        assert!(b.remove(3));
        assert!(!b.remove(3));
        assert!(!b.remove(100_000));
        assert_eq!(b.len(), 1);
    }
}
