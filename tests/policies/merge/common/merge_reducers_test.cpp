// SPDX-License-Identifier: Apache-2.0
// Merge reducers (eviction spec §1.7): the LOOK-M spec oracle for average / pivotal / weighted
// (weights = key cosines, not normalised), the Elastic Cache bucket mean, §15.6 conservation
// (identical vectors merge to the same vector; anchors without members stay bit-identical), and
// random heads against the paper formulas evaluated in double, K and V merged with one assignment.

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kvcompress/policies/merge/common/merge_assignment.hpp"
#include "kvcompress/policies/merge/common/merge_reducers.hpp"

namespace {

using namespace kvcompress;
using namespace kvcompress::merge::common;
using Idx = std::vector<std::size_t>;

std::vector<float> merged(MergeReducer r, const std::vector<float>& weight) {
  // Slot 0 anchor x = (1, 0); members y1 = (0.8, 0.6) (cos 0.8), y2 = (1, 0) (cos 1).
  std::vector<float> data = {1, 0, 0.8f, 0.6f, 1, 0};
  const Idx anchors = {0}, members = {1, 2}, assign = {0, 0};
  std::uint32_t count[1];
  merge_into_anchors(data.data(), 3, 2, anchors.data(), 1, members.data(), assign.data(), weight.data(), 2, r, count);
  return {data[0], data[1]};
}

TEST(MergeReducers, LookMSpecOracle) {
  const std::vector<float> w = {0.8f, 1.0f};
  auto avg = merged(MergeReducer::kAverage, w), piv = merged(MergeReducer::kPivotal, w),
       wei = merged(MergeReducer::kWeighted, w);
  EXPECT_NEAR(avg[0], 0.93333, 1e-5);
  EXPECT_NEAR(avg[1], 0.20000, 1e-6);
  EXPECT_NEAR(piv[0], 0.96667, 1e-5);
  EXPECT_NEAR(piv[1], 0.10000, 1e-6);
  EXPECT_NEAR(wei[0], 0.88000, 1e-6);
  EXPECT_NEAR(wei[1], 0.16000, 1e-6);
}

TEST(MergeReducers, WeightsFromKeyCosinesDriveValuesToo) {
  // Assignment and weights from keys; values merged with the same assignment and weights.
  std::vector<float> keys = {1, 0, 0.8f, 0.6f, 1, 0}, values = {2, 4, 6, 8, 10, 12};
  const Idx anchors = {0}, members = {1, 2};
  Idx assign(2);
  std::vector<float> sim(2);
  assign_cosine_nearest(keys.data(), 3, 2, anchors.data(), 1, members.data(), 2, assign.data(), sim.data());
  EXPECT_NEAR(sim[0], 0.8, 1e-6);
  std::uint32_t count[1];
  merge_into_anchors(keys.data(), 3, 2, anchors.data(), 1, members.data(), assign.data(), sim.data(), 2,
                     MergeReducer::kWeighted, count);
  merge_into_anchors(values.data(), 3, 2, anchors.data(), 1, members.data(), assign.data(), sim.data(), 2,
                     MergeReducer::kWeighted, count);
  EXPECT_NEAR(keys[0], 0.88, 1e-6);
  EXPECT_NEAR(values[0], (2 + 0.8 * 6 + 1.0 * 10) / 3, 1e-5);
  EXPECT_NEAR(values[1], (4 + 0.8 * 8 + 1.0 * 12) / 3, 1e-5);
  // Members are untouched (compaction drops them later).
  EXPECT_EQ(values[2], 6.0f);
}

TEST(MergeReducers, ElasticBucketMean) {
  // Bucket keys [1, 2, 3, 6] with the anchor at slot 2 → mean 3.
  std::vector<float> data = {1, 2, 3, 6};
  const Idx anchors = {2}, members = {0, 1, 3}, assign = {0, 0, 0};
  std::uint32_t count[1];
  merge_into_anchors(data.data(), 4, 1, anchors.data(), 1, members.data(), assign.data(), nullptr, 3,
                     MergeReducer::kBucketMean, count);
  EXPECT_NEAR(data[2], 3.0, 1e-6);
}

// §15.6: identical vectors stay identical; an anchor with no members is bit-identical.
TEST(MergeReducers, ConservationAndUntouchedAnchors) {
  for (MergeReducer r : {MergeReducer::kAverage, MergeReducer::kPivotal, MergeReducer::kBucketMean}) {
    std::vector<float> data = {0.3f, -1.7f, 2.5f, 0.3f, -1.7f, 2.5f, 0.3f, -1.7f, 2.5f, 9.1f, 0.2f, -4.4f};
    const std::vector<float> lone = {9.1f, 0.2f, -4.4f};
    const Idx anchors = {0, 3}, members = {1, 2}, assign = {0, 0};
    std::uint32_t count[2];
    merge_into_anchors(data.data(), 4, 3, anchors.data(), 2, members.data(), assign.data(), nullptr, 2, r, count);
    EXPECT_NEAR(data[0], 0.3, 1e-6) << to_string(r);
    EXPECT_NEAR(data[1], -1.7, 1e-6) << to_string(r);
    EXPECT_NEAR(data[2], 2.5, 1e-6) << to_string(r);
    EXPECT_EQ(std::vector<float>(data.begin() + 9, data.end()), lone) << to_string(r);
  }
}

TEST(MergeReducers, RandomHeadsMatchPaperFormulas) {
  std::mt19937 rng(8);
  std::normal_distribution<float> g(0, 1);
  std::uniform_real_distribution<float> u(-1, 1);
  const std::size_t n = 40, d = 8;
  for (MergeReducer r : {MergeReducer::kAverage, MergeReducer::kPivotal, MergeReducer::kWeighted,
                         MergeReducer::kBucketMean}) {
    std::vector<float> data(n * d);
    for (auto& x : data) x = g(rng);
    const std::vector<float> orig = data;
    Idx anchors, members, assign;
    std::vector<float> w;
    for (std::size_t j = 0; j < n; ++j)
      if (j % 4 == 1) anchors.push_back(j);
    for (std::size_t j = 0; j < n; ++j)
      if (j % 4 != 1) members.push_back(j), assign.push_back(rng() % (anchors.size() - 2)), w.push_back(u(rng));
    std::vector<std::uint32_t> count(anchors.size());
    merge_into_anchors(data.data(), n, d, anchors.data(), anchors.size(), members.data(), assign.data(), w.data(),
                       members.size(), r, count.data());
    for (std::size_t a = 0; a < anchors.size(); ++a)
      for (std::size_t t = 0; t < d; ++t) {
        const double x = orig[anchors[a] * d + t];
        double sum = 0, wsum = 0;
        int m = 0;
        for (std::size_t e = 0; e < members.size(); ++e)
          if (assign[e] == a) sum += orig[members[e] * d + t], wsum += w[e] * double(orig[members[e] * d + t]), ++m;
        double want = x;
        if (m > 0) {
          if (r == MergeReducer::kPivotal) want = (x + 0.5 * (sum + m * x)) / (m + 1);
          else if (r == MergeReducer::kWeighted) want = (x + wsum) / (m + 1);
          else want = (x + sum) / (m + 1);
        }
        EXPECT_NEAR(data[anchors[a] * d + t], want, 1e-5) << to_string(r) << " anchor " << a;
      }
  }
}

TEST(MergeReducers, RejectsBadArguments) {
  std::vector<float> data(8, 1.0f);
  const Idx anchors = {0}, members = {1}, bad_assign = {1}, assign = {0}, self = {0};
  std::uint32_t count[1];
  EXPECT_THROW(merge_into_anchors(data.data(), 4, 2, anchors.data(), 1, members.data(), bad_assign.data(), nullptr, 1,
                                  MergeReducer::kAverage, count),
               InvalidArgument);
  EXPECT_THROW(merge_into_anchors(data.data(), 4, 2, anchors.data(), 1, members.data(), assign.data(), nullptr, 1,
                                  MergeReducer::kWeighted, count),
               InvalidArgument);  // weighted needs weights
  EXPECT_THROW(merge_into_anchors(data.data(), 4, 2, anchors.data(), 1, self.data(), assign.data(), nullptr, 1,
                                  MergeReducer::kAverage, count),
               InvalidArgument);  // a member that is an anchor
}

}  // namespace
