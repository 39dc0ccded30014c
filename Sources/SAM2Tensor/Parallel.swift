import CKernels
import Dispatch
import Foundation

/// Run `body(i)` for i in 0..<count on up to two threads (this machine's cores; OpenBLAS
/// calls made inside are small and single-threaded, so nothing is oversubscribed).
@inline(__always)
public func parallelFor(_ count: Int, minimumPerThread: Int = 1, _ body: (Int) -> Void) {
    let threads = Parallelism.inParallelRegion ? 1 : min(Parallelism.threads, max(1, count / max(minimumPerThread, 1)))
    if threads <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    Parallelism.share(count, threads: threads, body)
}

/// Split `0..<count` into one contiguous chunk per thread.
@inline(__always)
public func parallelChunks(_ count: Int, minimumChunk: Int = 4096, _ body: (Range<Int>) -> Void) {
    let threads = Parallelism.inParallelRegion ? 1 : min(Parallelism.threads, max(1, count / minimumChunk))
    if threads <= 1 { body(0..<count); return }
    let step = (count + threads - 1) / threads
    Parallelism.share(threads, threads: threads) { t in
        let lo = t * step, hi = min(count, lo + step)
        if lo < hi { body(lo..<hi) }
    }
}

public enum Parallelism {
    /// Threads for GEMMs and pointwise kernels (the caller and `threads - 1` pool workers): the
    /// cores this process may use, or $SAM2_THREADS.
    public static let threads: Int = {
        if let s = ProcessInfo.processInfo.environment["SAM2_THREADS"], let n = Int(s), n > 0 { return min(n, 64) }
        return max(1, min(ProcessInfo.processInfo.activeProcessorCount, 64))
    }()
    /// True while `independentTasks` runs: nested kernels then stay on their own thread.
    nonisolated(unsafe) public private(set) static var inParallelRegion = false

    /// Run many small independent tasks (e.g. attention windows) on all cores; kernels called
    /// inside stay on their task's thread, so the cores are not oversubscribed.
    public static func independentTasks(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 || threads <= 1 || inParallelRegion {
            for i in 0..<count { body(i) }
            return
        }
        let n = min(threads, count)
        inParallelRegion = true
        share(count, threads: n, body)
        inParallelRegion = false
    }

    /// `[body(0), body(1), ...]` computed as independent tasks (e.g. the small heads that each read
    /// their own token): kernels inside stay on their task's thread.
    public static func map<T>(_ count: Int, _ body: (Int) -> T) -> [T] {
        var results = [T?](repeating: nil, count: count)
        results.withUnsafeMutableBufferPointer { r in
            independentTasks(count) { r[$0] = body($0) }
        }
        return results.map { $0! }
    }

    /// `body(i)` for every i in 0..<count on the calling thread and the worker pool
    /// (`sam2_pool_run`), each thread taking the next index when it is free: when a neighbour
    /// slows one core (this is a shared machine), the other takes more slabs instead of waiting at
    /// the end. Each index's work is the same whichever thread runs it, so results do not depend
    /// on the schedule. A call made while the pool is busy (from inside a task, or another
    /// thread) runs inline.
    static func share(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            var task = body
            let ran = withUnsafeMutablePointer(to: &task) { p in
                sam2_pool_run(count, Int32(threads), { context, i in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(i)
                }, p)
            }
            if ran == 0 {
                for i in 0..<count { body(i) }
            } else if ran < 0 {
                let next = UnsafeMutablePointer<Int>.allocate(capacity: 1)
                next.initialize(to: 0)
                defer { next.deallocate() }
                DispatchQueue.concurrentPerform(iterations: threads) { _ in
                    while case let i = sam2_next_index(next), i < count { body(i) }
                }
            }
        }
    }
}
