"""Detection ops in keras.ops (anchors, box coding, NMS, ROI align, RPN, Faster R-CNN parts)."""
