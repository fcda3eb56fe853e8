"""Detection ops in keras.ops (anchors, box coding, NMS, ROI align, RPN, Faster R-CNN parts).

Modules (import them directly; this package imports nothing so that ``boxes`` stays cheap):

- ``boxes``       IoU, R-CNN box coding (encode/decode with weights), clipping, batched gathers
- ``anchors``     anchors of one stride-s feature map
- ``nms``         batched greedy NMS with fixed outputs (class-agnostic and per-class)
- ``roi_align``   ROI Align (mean / max) and Fast R-CNN ROI pooling
- ``targets``     RPN anchor labels and head ROI sampling (fixed shapes, seedable)
- ``rpn``         RPNHead, decode_proposals, select_proposals, ProposalLayer (cascadable)
- ``heads``       BoxHead and decode_detections
- ``losses``      RPN and head losses (BCE / softmax CE + smooth L1)
- ``faster_rcnn`` FasterRCNNConfig and FasterRCNN(keras.Model)

Conventions: boxes ``[x1, y1, x2, y2]`` in input-image pixels at every interface; ground truth
padded with -1 rows (boxes) and -1 (classes); classes 0-based (the head adds background at 0).
"""
