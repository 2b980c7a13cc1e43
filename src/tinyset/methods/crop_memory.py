"""E2D's crop memory: per synthetic image, the crop boxes whose loss stayed above ``eps``.

Exploration stores boxes with CE > eps; exploitation samples a stored box with probability
softmax(stored losses), and after the step updates its loss or deletes it once CE <= eps."""
from __future__ import annotations

import torch

Box = tuple[float, float, float, float]


class CropMemory:
    def __init__(self, n: int, eps: float):
        self.eps = float(eps)
        self.boxes: list[list[Box]] = [[] for _ in range(n)]
        self.losses: list[list[float]] = [[] for _ in range(n)]
        self.stored_total = 0  # boxes ever stored (for the log)

    def __len__(self) -> int:
        return sum(len(b) for b in self.boxes)

    def size(self, i: int) -> int:
        return len(self.boxes[i])

    def all_empty(self) -> bool:
        return all(not b for b in self.boxes)

    def remember(self, boxes: torch.Tensor, losses: torch.Tensor) -> None:
        """Exploration: store each image's box if its CE exceeds eps (an existing box is updated)."""
        for i, (box, loss) in enumerate(zip(boxes.tolist(), losses.tolist())):
            if loss > self.eps:
                box = tuple(box)
                if box in self.boxes[i]:
                    self.losses[i][self.boxes[i].index(box)] = loss
                else:
                    self.boxes[i].append(box)
                    self.losses[i].append(loss)
                    self.stored_total += 1

    def sample(self, i: int, generator: torch.Generator | None = None) -> int:
        """Index of a stored box of image ``i``, drawn with probability softmax(stored losses)."""
        p = torch.softmax(torch.tensor(self.losses[i], dtype=torch.float64), 0)
        return int(torch.multinomial(p, 1, generator=generator))

    def update(self, i: int, slot: int, loss: float) -> None:
        """After a step on box ``slot``: keep its new loss, or delete it once solved (CE <= eps)."""
        if loss <= self.eps:
            del self.boxes[i][slot]
            del self.losses[i][slot]
        else:
            self.losses[i][slot] = float(loss)
